"""Clinical objectives in the search: constraints, budgets, multi-objective Pareto fronts, searchable losses."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mednas import api
from mednas.config import load_task
from mednas.data import ArrayData
from mednas.metrics._objective import (
    combine,
    constraint_violations,
    evaluate_objective,
    objective_report,
    operating_rule,
)
from mednas.testing import tiny_task


def _search(task: dict, run_dir: Path, **kw):  # noqa: ANN202
    return api.search(task, run_dir=run_dir, show_progress=False, **kw)


def test_constraints_and_budget_are_never_violated_by_the_best(
    tmp_path: Path, tiny_cls_datalist: Path
) -> None:
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={
            "metric": "auroc",
            "constraints": [{"metric": "specificity", "min": 0.8}, {"metric": "params", "max": 20000}],
            "operating_point": {"rule": "specificity_at_sensitivity", "target": 0.5},
        },
        search={"n_trials": 5, "budget": {"max_params": 30000}},
    )
    result = _search(task, tmp_path / "run")
    s = result.summary
    assert s["constraints"] == ["specificity >= 0.8", "params <= 20000"]
    records = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("trials/*/metrics.json")]
    for rec in records:
        if rec["state"] == "infeasible":
            assert rec["params"] > 20000 and "trained" not in rec
        if rec["state"] == "complete":
            assert rec["params"] <= 20000
            spec = rec["metrics"]["specificity"]["value"]
            assert rec["feasible"] == (spec is not None and spec >= 0.8)
    if "best" in s:
        assert s["best"]["metrics"]["specificity"]["value"] >= 0.8
        assert s["best"]["params"] <= 20000
    else:
        assert not any(r.get("feasible") for r in records)


def test_multi_objective_writes_a_pareto_front(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={"metric": "auroc", "secondary": ["params"]},
        search={"n_trials": 6},
    )
    s = _search(task, tmp_path / "run").summary
    assert s["objective"]["names"] == ["auroc", "params"]
    assert s["objective"]["directions"] == ["maximize", "minimize"]
    front = s["pareto_front"]
    assert front, "no Pareto front"
    for a in front:  # nobody on the front dominates anybody else on it
        for b in front:
            assert not (
                b["values"][0] >= a["values"][0]
                and b["values"][1] <= a["values"][1]
                and b["values"] != a["values"]
            )
    assert [p["values"][0] for p in front] == sorted((p["values"][0] for p in front), reverse=True)
    rec = json.loads((tmp_path / "run" / "trials" / str(front[0]["trial"]) / "metrics.json").read_text())
    assert rec["values"][1] == rec["params"]


def test_multi_objective_prunes_on_the_primary_metric(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={"metric": "auroc", "secondary": ["macs"]},
        search={
            "n_trials": 6,
            "pruner": {"name": "median", "startup_trials": 1, "warmup_epochs": 0},
            "dead_check_epoch": 0,
        },
        proxy={"shape": [16, 16], "epochs": 3},
    )
    _search(task, tmp_path / "run")
    histories = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("trials/*/metrics.json")]
    pruned = [h for h in histories if h["state"] == "pruned"]
    for h in pruned:
        assert "primary objective" in h["reason"] and "at least as cheap" in h["reason"]
    # A trial is pruned only against trials with no more MACs: the cheapest trial so far is never pruned.
    import optuna

    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            earlier = [o for o in study.trials if o.number < t.number and "static_secondary" in o.user_attrs]
            assert any(
                o.user_attrs["static_secondary"][0] <= t.user_attrs["static_secondary"][0] for o in earlier
            )


def test_multi_objective_pruning_compares_with_cheaper_trials_only() -> None:
    import optuna
    from optuna.trial import TrialState, create_trial

    from mednas.study._pruning import MultiObjectivePruner

    study = optuna.create_study(directions=["maximize", "minimize"])
    for primary, macs in [(0.9, 100.0), (0.8, 120.0), (0.7, 50.0)]:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[primary, macs],
                user_attrs={"primary_history": {"1": primary}, "static_secondary": [macs]},
            )
        )
    pruner = MultiObjectivePruner(SimpleNamespace(name="median", warmup_epochs=0, startup_trials=1))

    def judged(value: float, macs: float) -> bool:
        trial = study.ask()
        trial.set_user_attr("static_secondary", [macs])
        return pruner.should_prune(trial, 1, value)

    assert judged(0.6, 60.0) is True  # the only cheaper trial (50 MACs) scored 0.7: below its median
    assert judged(0.75, 60.0) is False  # above it
    assert judged(0.1, 10.0) is False  # the cheapest network yet: nobody to compare with, never pruned
    assert judged(0.75, 200.0) is True  # the most expensive: below the median 0.8 of all three


def test_latency_is_measured_and_constrained(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={"metric": "auroc", "constraints": [{"metric": "latency_ms", "max": 0.0001}]},
        search={"n_trials": 2},
    )
    s = _search(task, tmp_path / "run").summary
    assert s["n_trials"]["infeasible"] == 2
    rec = json.loads((tmp_path / "run" / "trials" / "0" / "metrics.json").read_text())
    assert rec["latency_ms"] > 0 and "latency_ms" in rec["reason"]


def test_losses_and_sampling_are_searched(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        search={"n_trials": 4, "losses": ["ce", "weighted_ce", "focal"], "sampling": ["uniform", "balanced"]},
    )
    _search(task, tmp_path / "run")
    import optuna

    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    for t in study.trials:
        assert t.params["loss"] in ("ce", "weighted_ce", "focal")
        # Sampling is searched only where the loss is not already class-weighted (one remedy at a time).
        assert (t.params.get("sampling") in ("uniform", "balanced")) == (t.params["loss"] == "ce")
    recs = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("trials/*/metrics.json")]
    assert {r["loss"] for r in recs} <= {"ce", "weighted_ce", "focal"}
    assert not any(r["loss"] != "ce" and r["sampling"] == "balanced" for r in recs)


# ----------------------------------------------------------------------------------- objective arithmetic


def _cls_task(objective: dict) -> object:
    return load_task(
        {
            "name": "t",
            "problem": "classification",
            "spatial_dims": 2,
            "data": {"format": "datalist", "path": "x.json"},
            "labels": {"names": ["no", "yes"]},
            "objective": objective,
            "search": {"spaces": ["resnet"]},
        }
    )


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, ArrayData]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    p1 = np.clip(labels * 0.35 + rng.random(n) * 0.65, 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    data = ArrayData(
        np.zeros((n, 1, 2, 2), np.float32),
        labels,
        [f"c{i}" for i in range(n)],
        [f"p{i // 2}" for i in range(n)],
    )
    return probs, data


def test_lower_is_better_terms_enter_with_a_negative_sign() -> None:
    task = _cls_task({"terms": [{"metric": "auroc", "weight": 1}, {"metric": "brier", "weight": 1}]})
    assert combine(task, {"auroc": 0.9, "brier": 0.1}) == pytest.approx((0.9 - 0.1) / 2)
    assert task.objective.name == "0.5*auroc-0.5*brier"


def test_expected_cost_uses_the_min_cost_operating_point() -> None:
    from sklearn.metrics import confusion_matrix

    task = _cls_task({"metric": "expected_cost", "cost_matrix": [[0, 1], [10, 0]]})
    assert operating_rule(task).kind == "min_cost"
    probs, data = _data()
    value, metrics = evaluate_objective(task, probs, data)
    report = objective_report(task, probs, data, seed=0, n_resamples=60)
    thr = report["operating_point"]["threshold"]
    pred = (probs[:, 1] >= thr).astype(int)
    tn, fp, fn, tp = confusion_matrix(data.labels, pred).ravel()
    assert metrics["expected_cost"] == pytest.approx((fp * 1 + fn * 10) / len(pred))
    assert value == pytest.approx(-metrics["expected_cost"])


def test_report_on_test_uses_the_validation_threshold() -> None:
    task = _cls_task({"metric": "sensitivity_at_specificity", "min_specificity": 0.8})
    probs, data = _data(seed=1)
    rep = objective_report(task, probs, data, seed=0, n_resamples=60, threshold=0.5)
    assert rep["operating_point"]["threshold"] == 0.5
    assert "chosen on validation" in rep["operating_point"]["rule"]
    sens = float(((probs[:, 1] >= 0.5) & (data.labels == 1)).sum() / (data.labels == 1).sum())
    assert rep["metrics"]["sensitivity"]["value"] == pytest.approx(sens)


def test_report_intervals_resample_patients_and_are_seeded() -> None:
    task = _cls_task({"metric": "auroc"})
    probs, data = _data()
    a = objective_report(task, probs, data, seed=3, n_resamples=100)
    b = objective_report(task, probs, data, seed=3, n_resamples=100)
    c = objective_report(task, probs, data, seed=4, n_resamples=100)
    assert a == b and a != c
    low, high = a["metrics"]["auroc"]["ci95"]
    assert low <= a["metrics"]["auroc"]["value"] <= high


def test_constraint_violations_follow_optuna_convention() -> None:
    task = _cls_task(
        {
            "metric": "auroc",
            "constraints": [{"metric": "specificity", "min": 0.9}, {"metric": "params", "max": 100}],
        }
    )
    v = constraint_violations(task, {"specificity": {"value": 0.95}}, {"params": 150})
    assert v[0] == pytest.approx(-0.05) and v[1] == pytest.approx(50)
    assert constraint_violations(task, {"specificity": {"value": None}}, {"params": 1})[0] > 0
