"""Retraining a ladder run (issue 17, item 1): the top rung is full fidelity, so a top-rung candidate's first seed
is its top-rung weights, validated and tested once, not trained again; further seeds train as usual.

A tiny two-rung ladder search on the x-ray demo task (the data of ``tests/study/test_ladder.py``, cached once for
the session by ``tests/conftest.py``), then ``api.retrain(run, top_k=1, seeds=2)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mednas import api
from mednas.retraining._retrain import _top_rung
from mednas.rundir import RunDir
from mednas.train import Fidelity

TASK = Path(__file__).resolve().parents[2] / "tasks" / "demo-xray-nodule.yaml"
LADDER = [
    "data.n_cases=80",
    "proxy.shape=[16,16]",
    "proxy.epochs=2",
    "training.shape=[32,32]",
    "training.batch_size=8",
    "objective.bootstrap.resamples=50",
    "search.fidelity=ladder",
    "search.ladder.eta=2",
    "search.ladder.rungs=[{scale: 0.5, epochs: 1}, {scale: 1.0, epochs: 1}]",
]


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("ladder-retrain") / "run"
    api.search(str(TASK), run_dir=run_dir, overrides=LADDER, n_trials=4, show_progress=False)
    return run_dir, api.retrain(run_dir, top_k=1, seeds=2, epochs=1, show_progress=False)


def test_first_seed_is_the_top_rungs_weights_and_the_second_is_trained(
    retrained: tuple[Path, object],
) -> None:
    run_dir, result = retrained
    (cand,) = result.candidates
    n = cand["trial"]
    proxy = json.loads((run_dir / "trials" / str(n) / "metrics.json").read_text())
    assert proxy["fidelity"] == "ladder" and proxy["rung_reached"] == 1 and proxy["shape"] == [32, 32]
    # Seed 1: the top rung's weights, byte for byte, with the top rung's epochs and no training time.
    assert cand["state"] == "complete" and cand["from_ladder"] is True
    assert cand["epochs"] == proxy["rungs"][-1]["epochs"] == 1
    assert cand["best_epoch"] == proxy["rungs"][-1]["best_epoch"]
    assert cand["seconds"] < 5.0
    ours = torch.load(run_dir / "retrain" / str(n) / "model.pt", weights_only=True)
    top = torch.load(run_dir / "trials" / str(n) / "model.pt", weights_only=True)
    assert ours.keys() == top.keys() and all(torch.equal(ours[k], top[k]) for k in top)
    # Validated (operating point on validation), then the test split evaluated once, as a trained seed is.
    assert cand["operating_point"] is not None and cand["test"]["threshold_from"] == "validation"
    assert cand["test"]["n_cases"] > 0 and cand["test"]["metrics"]["objective"]["value"] is not None
    assert (run_dir / "retrain" / str(n) / "predictions.json").is_file()
    # Its validation score is the top rung's, recomputed from the weights.
    assert cand["val"]["objective"] == pytest.approx(proxy["rungs"][-1]["value"], abs=1e-6)
    # Seed 2: trained at full fidelity, as today.
    second = json.loads((run_dir / "retrain" / str(n) / "seed-1" / "metrics.json").read_text())
    assert second["state"] == "complete" and not second.get("from_ladder") and len(second["history"]) == 1
    assert [bool(s.get("from_ladder")) for s in cand["seeds"]] == [True, False]
    assert all(s["test"] is not None for s in cand["seeds"])


def test_the_bundle_says_its_weights_are_the_ladders_evaluated_not_retrained(
    retrained: tuple[Path, object], tmp_path: Path
) -> None:
    run_dir, _ = retrained
    out = tmp_path / "bundle"
    api.export(run_dir, out=out)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    note = meta["mednas"]["metrics_note"]
    assert "top-rung weights" in note and "did not train them again" in note


def test_the_fidelity_record_and_cost_say_the_first_seed_came_from_the_ladder(
    retrained: tuple[Path, object],
) -> None:
    run_dir, result = retrained
    n = result.candidates[0]["trial"]
    assert result.fidelity["ladder"] is True and result.fidelity["from_ladder"] == [n]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["proxy_fidelity"]["ladder"] is True
    assert summary["retrain"]["results"][0]["from_ladder"] is True
    assert summary["retrain"]["cost"]["full_trainings"] == 1  # the ladder seed is no full training


def test_only_a_first_seed_of_a_top_rung_trial_with_weights_comes_from_the_ladder(
    retrained: tuple[Path, object],
) -> None:
    run_dir, result = retrained
    rd = RunDir(run_dir)
    task = rd.task()
    full = Fidelity.full(task, (32, 32), epochs=1)
    n = result.candidates[0]["trial"]
    assert _top_rung(rd, task, n, full, 0) is not None
    assert _top_rung(rd, task, n, full, 1) is None  # further seeds train
    assert _top_rung(rd, task, n, Fidelity.full(task, (40, 40), epochs=1), 0) is None  # not the full shape
    low = [m for m, t in rd.trials().items() if t.rung_reached == 0]
    assert low, "the search should have pruned a trial at rung 0"
    assert _top_rung(rd, task, low[0], full, 0) is None  # below the top rung: trained as today
