"""``benchmarks/ladder.py --tiny`` runs the flat arm, the ladder (and the inheriting ladder when the schema has
``search.inherit``) on the x-ray demo end to end and writes every field docs/benchmarks.md reports.

The tiny size is a smoke test (80 cases, 32x32 full shape, one or two epochs); its figures are not results.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ladder.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("ladder-bench")
    out = work / "ladder.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDNAS_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--tasks",
            "xray",
            "--work-dir",
            str(work),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "| task | arm |" in proc.stderr  # the Markdown table is printed
    return json.loads(out.read_text())


def _score(s: dict) -> None:
    assert len(s["values"]) == 2  # two seeds
    assert s["mean"] == pytest.approx(sum(s["values"]) / 2)
    low, high = s["ci95"]
    assert low <= s["mean"] <= high


def test_flat_arm_counts_the_search_and_the_full_trainings(tiny: dict) -> None:
    (task,) = tiny["tasks"]
    flat = task["flat"]
    assert flat["trials"] == task["n_trials"] == 4
    assert len(flat["top_k"]) == min(tiny["top_k"], flat["completed"])
    c = flat["compute"]
    assert c["voxel_epochs"] == c["search"] + c["full_trainings"] > 0
    # every full training is n_train x full voxels x the epochs it ran
    per = flat["n_train_full"] * math.prod(flat["full_shape"])
    assert c["full_trainings"] == sum(per * t["epochs"] for t in flat["top_k"])
    assert c["search"] % (flat["n_train_proxy"] * math.prod(flat["proxy_shape"])) == 0
    best = flat["best"]
    assert best["trial"] == flat["top_k"][0]["trial"]
    assert best["score"]["values"][0] == flat["top_k"][0]["val"]
    _score(best["score"])


def test_ladder_arm_reads_the_records_compute_and_adds_a_second_seed(tiny: dict) -> None:
    (task,) = tiny["tasks"]
    ladder = task["ladder"]
    # Four candidates; continuations of paused trials (deferred promotion) are more Optuna trials, not candidates.
    assert ladder["candidates"] == 4 and ladder["trials"] == 4 + ladder["continuations"]
    assert ladder["compute"]["voxel_epochs"] > 0 and ladder["rungs"][-1]["scale"] == 1.0
    assert ladder["reached"]["0"] == 4 >= ladder["reached"][str(len(ladder["rungs"]) - 1)] >= 1
    best = ladder["best"]
    assert best["score"]["values"][0] == best["top_rung"]
    assert best["second_seed"]["trial"] == best["trial"]
    _score(best["score"])
    goal = task["goal"]["ladder"]
    flat_ve = task["flat"]["compute"]["voxel_epochs"]
    assert goal["compute_ratio"] == pytest.approx(ladder["compute"]["voxel_epochs"] / flat_ve)
    assert goal["met"] == (goal["compute_ok"] and goal["score_ok"])


def test_inherit_arm_runs_or_says_why_not_and_nothing_touches_test(tiny: dict) -> None:
    (task,) = tiny["tasks"]
    if task["ladder_inherit"] is None:
        assert any("search.inherit" in n for n in task["notes"])
    else:
        assert task["ladder_inherit"]["compute"]["voxel_epochs"] > 0
        assert "ladder_inherit" in task["goal"]
    assert task["rung_fidelity"] is None and any("--fidelity" in n for n in task["notes"])
    assert tiny["split"].startswith("validation")
    assert {"cpu_count", "torch", "platform"} <= set(tiny["machine"])
