"""``benchmarks/overhead.py --quick`` runs a real search trial beside a bare loop and prints the three parts.

The quick mode is a smoke test (64 simulated x-ray cases at 32 px, two epochs, one repeat): its share is not a
result (a trial of a fraction of a second is all overhead), but its output has the full benchmark's shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "overhead.py"

# Slow: each test starts the benchmark script (a process that runs a search, 9-11 s); the figures it measures are
# issue 15's Done-when, recorded in docs/benchmarks.md, not asserted here.
pytestmark = pytest.mark.slow


def test_quick_overhead_benchmark_prints_the_split(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDNAS_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    line = proc.stdout.splitlines()[0]
    for part in (
        "framework",
        "% of a",
        "counted part by part",
        "before first epoch",
        "per epoch",
        "after last epoch",
    ):
        assert part in line, line
    result = json.loads(out.read_text())["results"][0]
    assert result["task"] == "demo-xray-nodule" and result["trial_state"] == "complete"
    assert result["epochs"] == 2 and len(result["trial"]["epochs_s"]) == len(result["bare"]["epochs_s"]) == 2
    o = result["overhead"]
    assert set(o) == {
        "share_pct",
        "share_pct_range",
        "accounted_share_pct",
        "callbacks_per_epoch_s",
        "fixed_share_pct",
        "seconds",
        "before_first_epoch_s",
        "per_epoch_s",
        "after_last_epoch_s",
    }
    assert o["seconds"] > 0 and 0 < o["share_pct"] < 100  # a mednas trial does more than the bare loop
    # One repeat: the range is that repeat; the counted share holds the fixed parts and the epoch callbacks.
    assert o["share_pct_range"] == [o["share_pct"], o["share_pct"]]
    assert 0 < o["fixed_share_pct"] <= o["accounted_share_pct"] < 100 and o["callbacks_per_epoch_s"] > 0
    assert result["history_trials"] == 0
    t = result["trial"]
    assert t["before_first_epoch_s"] + sum(t["epochs_s"]) + t["after_last_epoch_s"] == pytest.approx(
        t["wall_s"], abs=0.01
    )


def test_overhead_benchmark_measures_a_trial_after_a_history(tmp_path: Path) -> None:
    """``--history N``: N finished trials drawn by the search's sampler come first; the measured trial is the next."""
    out = tmp_path / "overhead.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDNAS_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--history", "3", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())["results"][0]
    assert result["history_trials"] == 3 and result["trial_state"] == "complete"


@pytest.mark.parametrize("option", [["--history", "-1"], ["--repeats", "0"]])
def test_overhead_benchmark_refuses_a_negative_history_or_no_repeats(
    tmp_path: Path, option: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *option],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("overhead.py: error: --")
    assert list(tmp_path.iterdir()) == []
