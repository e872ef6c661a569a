"""Golden run: the x-ray demo search with a fixed seed draws the same specs and scores them the same.

The expected file was written by the code before the middle floors were reshaped (issue 16); a refactoring that
changes what a search samples, trains or scores fails here. Regenerate only for a deliberate change of behaviour:

    MEDNAS_UPDATE_GOLDEN=1 python -m pytest tests/study/test_golden_run.py

Training runs on one CPU thread (``tests/conftest.py``), which is deterministic for a given torch build; the file
records the torch version it was made with, and the test is skipped under another one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from mednas import api

GOLDEN = Path(__file__).parent / "golden" / "xray_demo_search.json"
TASK = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"
OVERRIDES = [
    "data.n_cases=60",
    "proxy.shape=[24,24]",
    "proxy.epochs=2",
    "training.shape=[32,32]",
    "training.batch_size=8",
    "search.pruner.name=none",
    "objective.bootstrap.resamples=50",
]
N_TRIALS = 4


def _record(run_dir: Path) -> dict:
    trials = []
    for tdir in sorted((run_dir / "trials").iterdir(), key=lambda p: int(p.name)):
        metrics = json.loads((tdir / "metrics.json").read_text())
        spec = json.loads((tdir / "spec.json").read_text())
        trials.append(
            {
                "trial": int(tdir.name),
                "state": metrics["state"],
                "spec_hash": metrics.get("spec_hash"),
                "spec": spec,
                "loss": metrics.get("loss"),
                "sampling": metrics.get("sampling"),
                "seed": metrics.get("seed"),
                "values": metrics.get("values"),
                "history": [[h["epoch"], h["train_loss"], h["value"]] for h in metrics.get("history", [])],
                "metrics": {k: v.get("value") for k, v in sorted((metrics.get("metrics") or {}).items())},
                "params": metrics.get("params"),
                "macs": metrics.get("macs"),
            }
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "trials": trials,
        "best": {"trial": summary["best"]["trial"], "values": summary["best"]["values"]},
    }


def _close(a: object, b: object, path: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, f"{path}: {a} != {b}"
        if math.isnan(float(a)) and math.isnan(float(b)):
            return
        assert math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-6), f"{path}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_golden_xray_demo_search(tmp_path: Path) -> None:
    import torch

    run_dir = tmp_path / "run"
    api.search(
        str(TASK), run_dir=run_dir, overrides=OVERRIDES, n_trials=N_TRIALS, show_progress=False, threads=1
    )
    got = _record(run_dir) | {"torch": torch.__version__}
    if os.environ.get("MEDNAS_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    want = json.loads(GOLDEN.read_text())
    if want.get("torch") != torch.__version__:
        pytest.skip(f"golden values were made with torch {want.get('torch')}, this is {torch.__version__}")
    assert [t["state"] for t in got["trials"]] == [t["state"] for t in want["trials"]]
    _close(got, want, "run")
