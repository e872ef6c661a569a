"""``benchmarks/real_data.py --quick`` runs end to end on the real PneumoniaMNIST file and writes every figure.

The quick mode is a smoke test (240 training / 120 validation images, one epoch, one seed, two tiny mednas
trials); the figures it writes are not results, but its JSON has the shape the full benchmark's has.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._shared_data import shared_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "real_data.py"
MODELS = ("mednas", "resnet18", "efficientnet_b0", "densenet121")
METRICS = ("auroc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the benchmark script may take up to 300 s


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    npz = shared_file("pneumoniamnist", "pneumoniamnist-dev.npz")
    out = tmp_path_factory.mktemp("real-data") / "real_data.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDNAS_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--npz", str(npz), "--out", str(out), "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "VALIDATION split" in proc.stdout  # the printed table says which split every figure is on
    return json.loads(out.read_text())


def _interval(m: dict) -> None:
    low, high = m["ci95"]
    assert low is not None and high is not None
    assert 0.0 <= low <= high <= 1.0


def test_every_model_has_every_metric_with_an_interval(quick_result: dict) -> None:
    assert set(MODELS) <= set(quick_result["models"]), quick_result.get("not_run")
    for key in MODELS:
        entry = quick_result["models"][key]
        for name in METRICS:
            m = entry["metrics"][name]
            assert 0.0 <= m["mean"] <= 1.0, (key, name)
            _interval(m)
            assert m["n_seeds"] == 1
        assert "objective" in entry["metrics"]
        seed = entry["seeds"][0]
        for name in METRICS:
            _interval(seed["metrics"][name])
        cost = entry["cost"]
        assert cost["params"] > 0 and cost["macs"] > 0
        assert cost["latency_ms"]["median"] > 0 and cost["latency_ms"]["batch"] == 1
        assert entry["train_seconds"]["mean"] > 0
        assert math.isfinite(entry["seconds_per_epoch"])


def test_the_record_says_what_was_compared(quick_result: dict) -> None:
    assert "VALIDATION" in quick_result["evaluated_on"]
    assert quick_result["dataset"]["counts"]["train"]["images"] == 4690
    assert quick_result["dataset"]["counts"]["val"]["images"] == 524
    assert quick_result["dataset"]["used"] == {"train": 240, "val": 120}
    published = {r["model"]: r for r in quick_result["published_test_figures"]["rows"]}
    assert published["ResNet-18 (28 px)"]["auroc"] == 0.944
    assert published["Google AutoML Vision"]["accuracy"] == 0.946
    assert any("VALIDATION" in d for d in quick_result["differences"])
    # The stock networks that cannot run at 28 px are recorded with their error, and DenseNet ran upsampled.
    failing = {r["model"]: r for r in quick_result["not_run"]}
    assert "DenseNet121" in failing and failing["DenseNet121"]["error"]
    assert quick_result["models"]["densenet121"]["input_px"] == 32
    assert quick_result["models"]["mednas"]["search"]["n_trials"]
