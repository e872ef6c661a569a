"""The vectorised classification bootstrap gives the per-resample loop's numbers, from the same patient draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mednas.config import load_task
from mednas.data import ArrayData
from mednas.metrics import _objective as objective_mod
from mednas.metrics._bootstrap import patient_resamples
from mednas.metrics._objective import objective_report
from mednas.metrics._resampled import case_weights, resampled_curves


def _task(
    objective: dict, names: tuple[str, ...] = ("no", "yes"), findings: list[str] | None = None
) -> object:
    labels: dict = {"names": list(names)}
    if findings:
        labels["findings"] = findings
    return load_task(
        {
            "name": "t",
            "problem": "classification",
            "spatial_dims": 2,
            "data": {"format": "datalist", "path": "x.json"},
            "labels": labels,
            "objective": objective,
            "search": {"spaces": ["resnet"]},
        }
    )


def _data(n: int = 90, n_classes: int = 2, seed: int = 0, per_patient: int = 3, decimals: int = 2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.2 * np.eye(n_classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs = np.round(probs, decimals)  # coarse scores: many ties, as on real validation sets
    probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)
    patients = [f"p{i // per_patient}" for i in rng.permutation(n)]  # a patient's cases are not adjacent
    return probs, ArrayData(
        np.zeros((n, 1, 2, 2), np.float32), labels.astype(np.int64), [f"c{i}" for i in range(n)], patients
    )


def _loop_report(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as mp:
        mp.setattr(objective_mod, "_bootstrap_classification", lambda *a, **k: None)
        return objective_report(*args, **kwargs)


def _assert_same(fast: dict, slow: dict) -> None:
    assert fast.keys() == slow.keys()
    assert fast["operating_point"] == slow["operating_point"]
    for section in ("metrics", "per_class"):
        assert fast[section].keys() == slow[section].keys()
    for name, m in slow["metrics"].items():
        f = fast["metrics"][name]
        assert f["value"] == m["value"], name
        assert f["n_resamples"] == m["n_resamples"], name
        for a, b in zip(f["ci95"], m["ci95"]):
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-12), name
    for cls, rec in slow["per_class"].items():
        for k in ("recall", "ppv"):
            assert fast["per_class"][cls][k]["ci95"] == pytest.approx(rec[k]["ci95"], abs=1e-12)
        assert fast["per_class"][cls]["n"] == rec["n"]


OBJECTIVES = [
    {"metric": "sensitivity_at_specificity", "min_specificity": 0.8},
    {"metric": "specificity_at_sensitivity", "min_sensitivity": 0.9},
    {"metric": "auroc"},
    {
        "terms": [
            {"metric": "auprc", "weight": 2},
            {"metric": "brier", "weight": 1},
            {"metric": "ece", "n_bins": 5},
        ]
    },
    {"metric": "fbeta", "beta": 2},
    {"metric": "weighted_balanced_accuracy", "sensitivity_weight": 0.7},
    {"metric": "expected_cost", "cost_matrix": [[0, 1], [10, 0]]},
    {"terms": [{"metric": "net_benefit", "threshold_probability": 0.3}, {"metric": "auroc"}]},
]


@pytest.mark.parametrize(
    "objective", OBJECTIVES, ids=lambda o: o.get("metric") or "+".join(t["metric"] for t in o["terms"])
)
def test_vectorised_report_equals_the_per_resample_loop(monkeypatch, objective: dict) -> None:
    task = _task(objective)
    probs, data = _data(seed=1)
    fast = objective_report(task, probs, data, seed=7, n_resamples=120)
    slow = _loop_report(monkeypatch, task, probs, data, seed=7, n_resamples=120)
    _assert_same(fast, slow)
    # A threshold chosen elsewhere (test figures): the floor metrics become rates at that threshold.
    fast = objective_report(task, probs, data, seed=3, n_resamples=80, threshold=0.4)
    slow = _loop_report(monkeypatch, task, probs, data, seed=3, n_resamples=80, threshold=0.4)
    _assert_same(fast, slow)


def test_vectorised_report_with_three_classes_and_small_patient_counts(monkeypatch) -> None:
    # 3 classes, two findings; 9 patients of one class each: some resamples lack a class, skipped alike.
    task = _task(
        {"metric": "sensitivity_at_specificity", "min_specificity": 0.7},
        names=("a", "b", "c"),
        findings=["b", "c"],
    )
    probs, data = _data(n=24, n_classes=3, seed=4, decimals=1)
    data = ArrayData(data.images, data.labels, data.keys, [f"p{y}{i % 3}" for i, y in enumerate(data.labels)])
    fast = objective_report(task, probs, data, seed=0, n_resamples=200)
    slow = _loop_report(monkeypatch, task, probs, data, seed=0, n_resamples=200)
    _assert_same(fast, slow)
    assert min(rec["recall"]["n_resamples"] for rec in fast["per_class"].values()) < 200


def test_the_vectorised_report_is_what_objective_report_uses(monkeypatch) -> None:
    calls = []
    real = objective_mod._bootstrap_classification
    monkeypatch.setattr(
        objective_mod, "_bootstrap_classification", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setattr(
        objective_mod, "_bootstrap_all", lambda *a, **k: pytest.fail("per-resample loop used")
    )
    probs, data = _data()
    objective_report(_task({"metric": "auroc"}), probs, data, seed=0, n_resamples=60)
    assert calls


def test_resampled_curves_match_scikit_learn_on_each_resample() -> None:
    # Known data with ties and duplicated cases: each row's AUROC and AP equal scikit-learn on the copied cases.
    truth = np.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 1], dtype=bool)
    score = np.array([0.1, 0.9, 0.4, 0.4, 0.8, 0.3, 0.8, 0.6, 0.2, 0.4])
    codes = np.arange(10)
    draws = patient_resamples(codes, n_resamples=40, seed=2)
    w = case_weights(draws, codes, 10)
    curves = resampled_curves(w, truth, score)
    auc, ap = curves.auroc(), curves.average_precision()
    for b, drawn in enumerate(draws):
        t, s = truth[drawn], score[drawn]
        if t.any() and not t.all():
            assert auc[b] == pytest.approx(roc_auc_score(t, s), abs=1e-12)
        else:
            assert math.isnan(auc[b])
        if t.any():
            assert ap[b] == pytest.approx(average_precision_score(t, s), abs=1e-12)
    # The full data as one "resample" of weight one.
    full = resampled_curves(np.ones((1, 10)), truth, score)
    assert full.auroc()[0] == pytest.approx(roc_auc_score(truth, score))
    assert full.sensitivity_at_specificity(0.8)[0] == pytest.approx(
        0.6
    )  # threshold 0.6: 3 of 5 found, 4 of 5 clear
