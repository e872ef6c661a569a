"""benchmarks/gpu_throughput.py runs on a CPU in CI size and reports trials per hour per concurrency level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Issue 8's "benchmarks/gpu_throughput.py runs on CPU in CI-friendly size": about 25 s of worker processes, so in
# the slow set, which .ci/run runs after `make test` (issue 16 keeps `make test` within 6 minutes).
@pytest.mark.slow
def test_throughput_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_throughput.py"),
            "--tiny",
            "--concurrency",
            "1,2",
            "--trials",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "--workers K (CPU)"
    assert [r["concurrent"] for r in result["results"]] == [1, 2]
    for r in result["results"]:
        assert r["trials"] >= 2 and r["trials_per_hour"] > 0
        assert r["utilisation_mean_percent"] is not None
