"""Threshold rules chosen on validation against brute force, then applied unchanged to test data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, fbeta_score, recall_score

from mednas.metrics import (
    OperatingPoint,
    ThresholdRule,
    UndefinedMetricWarning,
    apply_threshold,
    choose_threshold,
    evaluate_threshold,
    sensitivity_at_specificity,
)


def _data(seed: int, n: int = 200, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return y, (np.round(s, decimals) if decimals is not None else s)


def _candidates(score: np.ndarray) -> list[float]:
    return [math.inf, *sorted(set(score.tolist()), reverse=True)]


def _best(y: np.ndarray, s: np.ndarray, objective) -> float:
    """Highest threshold maximising ``objective(pred)`` over every candidate, by brute force."""
    values = [(objective(s >= t), t) for t in _candidates(s)]
    top = max(v for v, _ in values)
    return max(t for v, t in values if v >= top - 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_youden_brute_force(seed):
    y, s = _data(seed)

    def youden(pred):
        return (
            recall_score(y, pred, zero_division=0) + recall_score(y, pred, pos_label=0, zero_division=0) - 1
        )

    op = choose_threshold(y, s, ThresholdRule("youden"))
    assert op.threshold == _best(y, s, youden)
    assert op.sensitivity + op.specificity - 1 == pytest.approx(youden(s >= op.threshold))
    assert op.rule == "youden"


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_fbeta_brute_force(beta):
    y, s = _data(3)
    op = choose_threshold(y, s, ThresholdRule("fbeta", beta=beta))
    assert op.threshold == _best(y, s, lambda pred: fbeta_score(y, pred, beta=beta, zero_division=0))


@pytest.mark.parametrize("cost", [[[0, 1], [10, 0]], [[0, 5], [1, 0]], [[0.2, 1.0], [3.0, 0.5]]])
def test_min_cost_brute_force(cost):
    y, s = _data(4)
    c = np.asarray(cost, dtype=float)

    def neg_cost(pred):
        return -(confusion_matrix(y, pred, labels=[0, 1]) * c).sum() / len(y)

    op = choose_threshold(y, s, ThresholdRule("min_cost", cost_matrix=cost))
    assert op.threshold == _best(y, s, neg_cost)


def test_constrained_rules_delegate_and_accept_dicts():
    y, s = _data(5)
    by_rule = choose_threshold(y, s, {"kind": "sensitivity_at_specificity", "target": 0.9})
    assert by_rule == sensitivity_at_specificity(y, s, 0.9)
    op = choose_threshold(y, s, ThresholdRule("specificity_at_sensitivity", target=0.8))
    assert op.sensitivity >= 0.8


def test_validation_threshold_applies_to_test_data():
    y_val, s_val = _data(6, decimals=None)
    y_test, s_test = _data(7, decimals=None)
    op = choose_threshold(y_val, s_val, ThresholdRule("sensitivity_at_specificity", target=0.85))
    called = apply_threshold(s_test, op)
    assert called.dtype == bool and np.array_equal(called, s_test >= op.threshold)
    on_test = evaluate_threshold(y_test, s_test, op)
    assert on_test.threshold == op.threshold and on_test.rule == op.rule
    assert on_test.sensitivity == pytest.approx(recall_score(y_test, called))
    assert on_test.specificity == pytest.approx(recall_score(y_test, called, pos_label=0))
    # On the data it was chosen on, the point reproduces itself.
    again = evaluate_threshold(y_val, s_val, op.threshold)
    assert (again.sensitivity, again.specificity, again.rule) == (op.sensitivity, op.specificity, "fixed")


def test_apply_threshold_on_multiclass_and_multilabel_findings():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    assert apply_threshold(p, 0.45, positive=[1, 2]).tolist() == [False, True]
    assert apply_threshold(p, 0.45, positive=[1, 2], multilabel=True).tolist() == [False, True]
    assert apply_threshold(p, 0.35, positive=[1, 2]).tolist() == [True, True]  # sum 0.4 >= 0.35
    assert apply_threshold(p, 0.35, positive=[1, 2], multilabel=True).tolist() == [False, True]  # max 0.3


def test_single_class_validation_set():
    y = np.zeros(10, int)
    s = np.linspace(0, 1, 10)
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        op = choose_threshold(y, s, ThresholdRule("youden"))
    assert math.isnan(op.threshold) and op.reason
    with pytest.raises(ValueError, match="undefined"):
        apply_threshold(s, op)
    # A cost can still be minimised without positives: calling no case positive is free.
    op = choose_threshold(y, s, ThresholdRule("min_cost", cost_matrix=[[0, 1], [10, 0]]))
    assert op.threshold == math.inf and op.specificity == 1.0 and math.isnan(op.sensitivity)
    assert "sensitivity" in op.reason


def test_rule_validation_and_round_trip():
    with pytest.raises(ValueError, match="target"):
        ThresholdRule("sensitivity_at_specificity")
    with pytest.raises(ValueError, match="unknown threshold rule"):
        ThresholdRule("accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost_matrix"):
        ThresholdRule("min_cost")
    with pytest.raises(ValueError, match="2x2"):
        ThresholdRule("min_cost", cost_matrix=((0, 1, 2), (1, 0, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown threshold-rule keys"):
        ThresholdRule.from_dict({"kind": "youden", "floor": 0.9})
    for rule in (
        ThresholdRule("specificity_at_sensitivity", target=0.95),
        ThresholdRule("fbeta", beta=2.0),
        ThresholdRule("min_cost", cost_matrix=((0, 1), (10, 0))),
    ):
        assert ThresholdRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


def test_operating_point_is_frozen_and_json_ready():
    op = OperatingPoint(0.4, 0.9, 0.8, "youden")
    with pytest.raises(AttributeError):
        op.threshold = 0.5  # type: ignore[misc]
    assert json.loads(json.dumps(op.to_dict())) == {
        "threshold": 0.4,
        "sensitivity": 0.9,
        "specificity": 0.8,
        "rule": "youden",
        "reason": None,
    }
