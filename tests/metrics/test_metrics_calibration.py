"""Temperature scaling, the operating point's warnings, the new classification metrics and the honest test row."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mednas.metrics import (
    accuracy,
    apply_temperature,
    calibration_record,
    expected_calibration_error,
    fit_temperature,
    logits_from_probabilities,
    operating_point_warnings,
    per_class_metrics,
    predicted_classes,
)


def _calibrated_logits(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary logits whose softmax is calibrated by construction (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    return np.stack([np.zeros(n), margin], axis=1), y


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_recovers_a_known_scaling(scale: float) -> None:
    z, y = _calibrated_logits()
    t = fit_temperature(scale * z, y)
    assert t == pytest.approx(scale, rel=0.1)
    # From stored probabilities alone (log p = logits up to a per-case constant): the same temperature.
    probs = apply_temperature(scale * z, 1.0)
    assert fit_temperature(logits_from_probabilities(probs), y) == pytest.approx(t, rel=1e-3)


def test_temperature_is_one_when_there_is_nothing_to_fit() -> None:
    assert fit_temperature(np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([1, 1])) == 1.0
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, int)) == 1.0


def test_softmax_of_logits_over_temperature() -> None:
    z = np.array([[1.0, 3.0, -1.0]])
    expected = np.exp(z / 2.0) / np.exp(z / 2.0).sum()
    np.testing.assert_allclose(apply_temperature(z, 2.0), expected)
    with pytest.raises(ValueError):
        apply_temperature(z, 0.0)


def test_calibration_lowers_ece_of_overconfident_probabilities() -> None:
    z, y = _calibrated_logits()
    probs = apply_temperature(4.0 * z, 1.0)  # overconfident
    rec, calibrated = calibration_record(probs, y, [1])
    assert rec["temperature"] == pytest.approx(4.0, rel=0.1)
    assert rec["ece_after"] < rec["ece_before"] and rec["ece_after"] < 0.03 < rec["ece_before"]
    assert rec["nll_after"] < rec["nll_before"]
    assert rec["ece_after"] == pytest.approx(expected_calibration_error(y, calibrated[:, 1]))
    assert np.argsort(calibrated[:, 1]).tolist() == np.argsort(probs[:, 1]).tolist()  # ranking unchanged


def test_operating_point_warnings() -> None:
    few_neg = np.r_[np.zeros(40, int), np.ones(200, int)]
    many = np.r_[np.zeros(300, int), np.ones(300, int)]
    spec_rule = "sensitivity_at_specificity>=0.8"
    w = operating_point_warnings({"threshold": 0.025, "rule": spec_rule}, ece_after=0.14, truth=few_neg)
    assert len(w) == 3
    assert (
        "extreme threshold 0.025" in w[0]
        and "ECE 0.140" in w[1]
        and "only 40 validation cases without" in w[2]
    )
    assert (
        "extreme threshold 0.97"
        in operating_point_warnings({"threshold": 0.97, "rule": spec_rule}, ece_after=0.01, truth=many)[0]
    )
    assert operating_point_warnings({"threshold": 0.5, "rule": spec_rule}, ece_after=0.1, truth=many) == []
    # A sensitivity floor is decided by the cases with the finding.
    w = operating_point_warnings(
        {"threshold": 0.5, "rule": "specificity_at_sensitivity>=0.9"}, ece_after=0.0, truth=few_neg
    )
    assert w == []
    w = operating_point_warnings(
        {"threshold": 0.5, "rule": "specificity_at_sensitivity>=0.9"}, ece_after=0.0, truth=1 - few_neg
    )
    assert len(w) == 1 and "40 validation cases with the finding" in w[0]
    # An infinite threshold (no case called positive) is not "extreme"; no operating point, no count warning.
    assert (
        operating_point_warnings({"threshold": math.inf, "rule": spec_rule}, ece_after=None, truth=many) == []
    )
    assert operating_point_warnings(None, ece_after=None, truth=few_neg) == []
    # A temperature at the edge of its range: the validation scores carry little probability information.
    w = operating_point_warnings(
        {"threshold": 0.5, "rule": spec_rule}, ece_after=0.0, truth=many, temperature=20.0
    )
    assert len(w) == 1 and "edge of its range" in w[0]
    assert (
        operating_point_warnings(
            {"threshold": 0.5, "rule": spec_rule}, ece_after=0.0, truth=many, temperature=1.7
        )
        == []
    )
    # Calibration that made ECE worse (few cases: NLL and ECE disagree) is said so.
    w = operating_point_warnings(
        {"threshold": 0.5, "rule": spec_rule}, ece_after=0.08, truth=many, ece_before=0.05
    )
    assert len(w) == 1 and "raised the validation ECE from 0.050 to 0.080" in w[0]
    assert (
        operating_point_warnings(
            {"threshold": 0.5, "rule": spec_rule}, ece_after=0.03, truth=many, ece_before=0.05
        )
        == []
    )


def test_accuracy_and_per_class_table() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    )
    # Findings 1 and 2: finding score 0.2, 0.5, 0.8, 0.7, 0.4, 0.9; at 0.45 cases 1, 2, 3, 5 are called findings.
    called = predicted_classes(probs, [1, 2], 0.45)
    assert called.tolist() == [0, 1, 1, 1, 0, 2]
    pc = per_class_metrics(y, called, 3)
    assert (pc["class0_recall"], pc["class0_ppv"], pc["class0_n"]) == (pytest.approx(1 / 3), 0.5, 3.0)
    assert (pc["class1_recall"], pc["class1_ppv"], pc["class1_n"]) == (0.5, pytest.approx(1 / 3), 2.0)
    assert (pc["class2_recall"], pc["class2_ppv"]) == (1.0, 1.0)
    assert predicted_classes(probs, [1, 2], None).tolist() == probs.argmax(axis=1).tolist()
    assert accuracy(
        np.isin(y, [1, 2]).astype(int), probs[:, 1:].sum(axis=1), threshold=0.45
    ) == pytest.approx(3 / 6)


def _task(metric: dict) -> object:
    from mednas.config import load_task
    from mednas.testing import tiny_task

    raw = tiny_task("classification", "unused.json")
    raw["objective"] = {"terms": [metric]}
    return load_task(raw)


def test_test_row_uses_the_validation_threshold_not_one_chosen_on_test() -> None:
    from mednas.metrics._objective import objective_report

    task = _task({"metric": "sensitivity_at_specificity", "min_specificity": 0.75})
    # Test data where re-optimising would find sensitivity 1.0 at specificity 0.75 (threshold 0.35)...
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.45, 0.6, 0.9])
    data = SimpleNamespace(
        labels=labels, patients=[f"p{i}" for i in range(8)], keys=[f"c{i}" for i in range(8)]
    )
    probs = np.stack([1 - score, score], axis=1)
    reoptimised = objective_report(task, probs, data, seed=0, n_resamples=20)
    assert reoptimised["metrics"]["objective"]["value"] == pytest.approx(1.0)
    # ...but at the validation threshold 0.5 only two of four findings are called.
    at_val = objective_report(task, probs, data, seed=0, n_resamples=20, threshold=0.5)
    m = at_val["metrics"]
    assert m["objective"]["value"] == pytest.approx(0.5) and m["sensitivity_at_specificity"][
        "value"
    ] == pytest.approx(0.5)
    assert m["sensitivity"]["value"] == pytest.approx(0.5) and m["specificity"]["value"] == pytest.approx(1.0)
    assert at_val["operating_point"]["threshold"] == 0.5
    assert m["accuracy"]["value"] == pytest.approx(6 / 8) and m["balanced_accuracy"][
        "value"
    ] == pytest.approx(0.75)
    assert m["accuracy"]["ci95"][0] is not None
    pc = at_val["per_class"]
    assert set(pc) == set(task.labels.names)
    finding = task.labels.names[task.labels.finding_indices[0]]
    assert pc[finding]["n"] == 4 and pc[finding]["recall"]["value"] == pytest.approx(0.5)
    assert pc[finding]["ppv"]["value"] == pytest.approx(1.0) and pc[finding]["recall"]["ci95"][0] is not None
