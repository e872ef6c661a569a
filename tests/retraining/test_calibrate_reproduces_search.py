"""calibrate-proxy measures the search's own proxy: its training of a spec with a seed is the search trial's, exactly.

Both go through the one candidate trainer (:func:`mednas.train.train_candidate`); this test guards against the
two drifting apart again (another loss, batch sampling, patient subset, schedule or seed handling).
"""

from __future__ import annotations

import json
from pathlib import Path

from mednas import api
from mednas.config import load_task
from mednas.data import plan_data, read_or_create_salt
from mednas.retraining._calibrate import _Calibration, _Candidate, _settings
from mednas.rundir import RunDir
from mednas.spec import ArchSpec
from mednas.testing import tiny_task
from mednas.train import Fidelity


def test_calibration_proxy_training_reproduces_the_search_trial(
    tmp_path: Path, tiny_cls_datalist: Path
) -> None:
    # Augmentation, a patient subset and searched imbalance remedies: every knob the two could disagree on.
    raw = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={"metric": "auroc"},
        search={
            "n_trials": 3,
            "pruner": {"name": "none"},
            "losses": ["ce", "weighted_ce", "focal"],
            "sampling": ["uniform", "balanced"],
        },
        proxy={"shape": [16, 16], "epochs": 2, "subset": 0.75},
        training={"augment": True},
    )
    api.search(raw, run_dir=tmp_path / "search", show_progress=False)
    trials = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "search" / "trials").glob("*/metrics.json"))
    ]
    trials = [t for t in trials if t["state"] == "complete" and "duplicate_of" not in t]
    assert trials, "the tiny search should complete a trial"

    # A calibration in its own run directory (its own salt), at the task's own proxy setting.
    task = load_task(raw)
    rd = RunDir(tmp_path / "calibration")
    plan = plan_data(task, rd, salt=read_or_create_salt(rd))
    current = next(s for s in _settings(task, plan, [(0.5, 1)], 8) if s.current)
    assert (current.shape, current.epochs) == ((16, 16), 2)
    for trial in trials:
        spec = ArchSpec.from_dict(
            json.loads((tmp_path / "search" / "trials" / str(trial["trial"]) / "spec.json").read_text())
        )
        cand = _Candidate(spec, trial["loss"], trial["sampling"])
        cal = _Calibration(
            task, rd, plan, [cand], [current], Fidelity.full(task, plan.full_shape), "cpu", 0.6, 1, 1
        )
        train, val = cal.data(current)
        result = cal.train(cand, current, trial["seed"], train, val)
        got = [[h.epoch, h.train_loss, h.value] for h in result.history]
        want = [[h["epoch"], h["train_loss"], h["value"]] for h in trial["history"]]
        assert got == want, f"trial {trial['trial']} ({trial['loss']}, {trial['sampling']})"
        assert result.best_epoch == trial["best_epoch"] and result.best_value == trial["objective"]["value"]
        assert len(train) < len(plan.cases("train"))  # the proxy's patient subset, as the search trained on
