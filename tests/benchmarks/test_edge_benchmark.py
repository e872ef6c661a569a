"""``benchmarks/edge.py`` end to end at CI size: every field docs/benchmarks.md "Edge deployment" reports.

The tiny sizes are a smoke test (one epoch, a tenth of the PneumoniaMNIST training images); their figures are not
results. Needs the shared PneumoniaMNIST file (skipped without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._shared_data import shared_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "edge.py"
RUNTIMES = ("torch_fp32", "torchscript_fp32", "onnxruntime_fp32", "onnxruntime_int8")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _run(tmp_path: Path, *args: str) -> dict:
    data = shared_file("pneumoniamnist", "pneumoniamnist-dev.npz").parents[1]
    out = tmp_path / "edge.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDNAS_NO_PROGRESS": "1", "MEDNAS_SHARED_DATA": str(data)}
    cmd = [
        sys.executable,
        str(SCRIPT),
        *args,
        "--tiny",
        "--repeats",
        "3",
        "--work-dir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_runtimes_exports_int8_and_times_four_runtimes(tmp_path: Path) -> None:
    d = _run(tmp_path, "runtimes", "--tasks", "pneumonia", "--calibration", "8")
    assert d["machine"]["cpu"] and d["machine"]["threads"] == 1
    (r,) = d["results"]
    assert all(r["latency_1_thread"][k]["median_ms"] > 0 for k in RUNTIMES)
    int8 = r["int8_export"]
    assert int8["calibration"]["split"] == "train" and int8["evaluated_on"]["split"] == "validation"
    assert {"auroc", "objective"} <= set(int8["metrics"])
    assert int8["size"]["ratio"] > 0 and int8["latency"]["ratio"] > 0
    assert r["goal"]["int8_speedup"] > 0 and isinstance(r["goal"]["met"], bool)


def test_families_times_every_family_of_the_task(tmp_path: Path) -> None:
    d = _run(tmp_path, "families", "--tasks", "pneumonia", "--family-specs", "1")
    (t,) = d["results"]
    assert {r["family"] for r in t["families"]} == {"resnet", "efficientnet"}
    assert all(r[k]["median_ms"] > 0 for r in t["families"] for k in RUNTIMES)
