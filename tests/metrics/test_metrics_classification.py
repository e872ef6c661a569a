"""Classification metrics against scikit-learn (binary, multi-class finding classes, multi-label) and by hand."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mednas.metrics import (
    UndefinedMetricWarning,
    auprc,
    auroc,
    brier_score,
    expected_calibration_error,
    expected_cost,
    fbeta,
    finding_score,
    net_benefit,
    npv,
    ppv,
    sensitivity,
    sensitivity_at_specificity,
    specificity,
    specificity_at_sensitivity,
    weighted_balanced_accuracy,
)

THRESHOLDS = [0.3, 0.5, 0.71]


def _binary_data(seed: int = 0, n: int = 300, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    if decimals is not None:  # coarse scores produce ties between positives and negatives
        s = np.round(s, decimals)
    return y, s


def _multiclass_data(seed: int = 1, n: int = 300, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def _multilabel_data(seed: int = 2, n: int = 300, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < [0.2, 0.4, 0.6]).astype(int)
    s = np.clip(0.3 * y + 0.7 * rng.random((n, c)), 0, 1)
    return y, s


def _cases() -> list[tuple[str, np.ndarray, np.ndarray, object, np.ndarray, np.ndarray]]:
    """``(name, y_true, y_score, positive, finding truth, finding score)`` for every input kind."""
    yb, sb = _binary_data()
    ym, pm = _multiclass_data()
    yl, sl = _multilabel_data()
    return [
        ("binary", yb, sb, None, yb, sb),
        ("multiclass-one", ym, pm, 2, (ym == 2).astype(int), pm[:, 2]),
        ("multiclass-set", ym, pm, [1, 3], np.isin(ym, [1, 3]).astype(int), pm[:, [1, 3]].sum(axis=1)),
        ("multilabel-one", yl, sl, 1, yl[:, 1], sl[:, 1]),
        ("multilabel-set", yl, sl, [0, 2], yl[:, [0, 2]].any(axis=1).astype(int), sl[:, [0, 2]].max(axis=1)),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("t", THRESHOLDS)
def test_threshold_metrics_match_sklearn(case, t):
    _, y, s, pos, truth, score = case
    pred = score >= t
    assert sensitivity(y, s, threshold=t, positive=pos) == pytest.approx(recall_score(truth, pred))
    assert specificity(y, s, threshold=t, positive=pos) == pytest.approx(
        recall_score(truth, pred, pos_label=0)
    )
    assert ppv(y, s, threshold=t, positive=pos) == pytest.approx(precision_score(truth, pred))
    assert npv(y, s, threshold=t, positive=pos) == pytest.approx(precision_score(truth, pred, pos_label=0))
    for beta in (0.5, 1.0, 2.0):
        assert fbeta(y, s, beta=beta, threshold=t, positive=pos) == pytest.approx(
            fbeta_score(truth, pred, beta=beta)
        )
    assert weighted_balanced_accuracy(y, s, threshold=t, positive=pos) == pytest.approx(
        balanced_accuracy_score(truth, pred)
    )
    expected = 0.8 * recall_score(truth, pred) + 0.2 * recall_score(truth, pred, pos_label=0)
    assert weighted_balanced_accuracy(y, s, weight=0.8, threshold=t, positive=pos) == pytest.approx(expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ranking_and_calibration_match_sklearn(case):
    _, y, s, pos, truth, score = case
    assert auroc(y, s, positive=pos) == pytest.approx(roc_auc_score(truth, score))
    assert auprc(y, s, positive=pos) == pytest.approx(average_precision_score(truth, score))
    if score.max() <= 1:  # a multi-class sum of probabilities is a probability; all cases here stay in [0, 1]
        assert brier_score(y, s, positive=pos) == pytest.approx(brier_score_loss(truth, score))


def test_single_finding_class_equals_sklearn_one_vs_rest():
    y, p = _multiclass_data()
    per_class = roc_auc_score(y, p, multi_class="ovr", average=None)
    for k in range(p.shape[1]):
        assert auroc(y, p, positive=k) == pytest.approx(per_class[k])
    yl, sl = _multilabel_data()
    rec = recall_score(yl, sl >= 0.5, average=None)
    ap = average_precision_score(yl, sl, average=None)
    for k in range(sl.shape[1]):
        assert sensitivity(yl, sl, positive=k) == pytest.approx(rec[k])
        assert auprc(yl, sl, positive=k) == pytest.approx(ap[k])


def test_results_are_plain_python_floats():
    y, s = _binary_data()
    for fn in (
        sensitivity,
        specificity,
        ppv,
        npv,
        fbeta,
        weighted_balanced_accuracy,
        auroc,
        auprc,
        brier_score,
    ):
        assert type(fn(y, s)) is float, fn.__name__
    assert type(expected_calibration_error(y, s)) is float
    assert type(net_benefit(y, s, threshold_probability=0.2)) is float
    assert type(expected_cost(y, s, [[0, 1], [2, 0]])) is float
    op = sensitivity_at_specificity(y, s, 0.9)
    assert all(type(v) is float for v in (op.threshold, op.sensitivity, op.specificity))


def test_finding_score_sums_exclusive_classes_and_maxes_labels():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert finding_score(p, positive=[1, 2]).tolist() == pytest.approx([0.5, 0.9])
    assert finding_score(p, positive=[1, 2], multilabel=True).tolist() == pytest.approx([0.3, 0.8])
    assert finding_score(np.array([[0.4, 0.6]])).tolist() == [0.6]  # two classes default to class 1


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_matches_calibration_curve(n_bins):
    y, s = _binary_data(seed=3, n=500)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy="uniform")
    # Random continuous scores never sit on an edge, so numpy's histogram bins agree with sklearn's.
    counts = np.histogram(s, bins=np.linspace(0, 1, n_bins + 1))[0]
    counts = counts[counts > 0]
    reference = float(np.sum(counts * np.abs(prob_true - prob_pred)) / len(y))
    assert expected_calibration_error(y, s, n_bins=n_bins) == pytest.approx(reference)


def test_ece_is_zero_for_perfect_bins_and_large_for_overconfidence():
    y = np.array([0, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.75, 0.75, 0.75, 0.75, 0.05, 0.05, 0.05, 0.05])  # bin rates 3/4 and 0 vs means 0.75, 0.05
    assert expected_calibration_error(y, s, n_bins=10) == pytest.approx(0.5 * 0.05)
    assert expected_calibration_error([0, 0], [0.99, 0.99]) == pytest.approx(0.99)


@pytest.mark.parametrize("pt", [0.1, 0.25, 0.5])
def test_net_benefit_by_hand(pt):
    y, s = _binary_data(seed=4)
    tn, fp, fn, tp = confusion_matrix(y, s >= pt).ravel()
    n = len(y)
    assert net_benefit(y, s, threshold_probability=pt) == pytest.approx(tp / n - fp / n * pt / (1 - pt))
    prevalence = y.mean()  # "treat all" is the reference line of a decision curve
    treat_all = net_benefit(y, np.ones(n), threshold_probability=pt)
    assert treat_all == pytest.approx(prevalence - (1 - prevalence) * pt / (1 - pt))
    assert net_benefit(y, np.zeros(n), threshold_probability=pt) == 0.0


def test_expected_cost_binary_by_hand():
    y, s = _binary_data(seed=5)
    cost = np.array([[0.0, 1.0], [10.0, 0.5]])
    for t in THRESHOLDS:
        cm = confusion_matrix(y, (s >= t).astype(int), labels=[0, 1])
        assert expected_cost(y, s, cost, threshold=t) == pytest.approx((cm * cost).sum() / len(y))


def test_expected_cost_multiclass_argmax_and_bayes_by_hand():
    y, p = _multiclass_data()
    rng = np.random.default_rng(7)
    cost = rng.uniform(1, 5, size=(4, 4))
    np.fill_diagonal(cost, 0)
    cm = confusion_matrix(y, p.argmax(axis=1), labels=range(4))
    assert expected_cost(y, p, cost) == pytest.approx((cm * cost).sum() / len(y))
    bayes = [min(range(4), key=lambda j, pi=pi: sum(pi[i] * cost[i, j] for i in range(4))) for pi in p]
    cm_bayes = confusion_matrix(y, bayes, labels=range(4))
    assert expected_cost(y, p, cost, decision="bayes") == pytest.approx((cm_bayes * cost).sum() / len(y))


def test_expected_cost_finding_of_multiclass_with_2x2_matrix():
    y, p = _multiclass_data()
    cost = [[0, 1], [4, 0]]
    truth, score = np.isin(y, [1, 2]).astype(int), p[:, [1, 2]].sum(axis=1)
    cm = confusion_matrix(truth, (score >= 0.4).astype(int))
    assert expected_cost(y, p, cost, threshold=0.4, positive=[1, 2]) == pytest.approx(
        (cm * np.array(cost)).sum() / len(y)
    )
    with pytest.raises(ValueError, match="cost_matrix"):
        expected_cost(y, p, np.zeros((3, 3)))


def _brute_force_points(truth: np.ndarray, score: np.ndarray) -> list[tuple[float, float, float]]:
    """``(threshold, sens, spec)`` for every distinct score and for inf, by counting."""
    points = []
    for t in [math.inf, *sorted(set(score.tolist()), reverse=True)]:
        pred = score >= t
        sens = (pred & (truth == 1)).sum() / (truth == 1).sum()
        spec = (~pred & (truth == 0)).sum() / (truth == 0).sum()
        points.append((t, float(sens), float(spec)))
    return points


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("floor", [0.0, 0.5, 0.8, 0.9, 0.95, 1.0])
def test_sensitivity_at_specificity_brute_force(floor, decimals):
    y, s = _binary_data(seed=6, n=150, decimals=decimals)
    points = _brute_force_points(y, s)
    best = max(p[1] for p in points if p[2] >= floor)
    expected = max((p for p in points if p[2] >= floor and p[1] == best), key=lambda p: p[0])
    op = sensitivity_at_specificity(y, s, floor)
    assert (op.threshold, op.sensitivity, op.specificity) == pytest.approx(expected)
    assert op.specificity >= floor
    assert op.rule == f"sensitivity_at_specificity>={floor:g}"


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("floor", [0.0, 0.5, 0.8, 0.9, 0.95, 1.0])
def test_specificity_at_sensitivity_brute_force(floor, decimals):
    y, s = _binary_data(seed=8, n=150, decimals=decimals)
    points = _brute_force_points(y, s)
    best = max(p[2] for p in points if p[1] >= floor)
    expected = min((p for p in points if p[1] >= floor and p[2] == best), key=lambda p: p[0])
    op = specificity_at_sensitivity(y, s, floor)
    assert (op.threshold, op.sensitivity, op.specificity) == pytest.approx(expected)


def test_operating_point_on_multiclass_finding_and_reproduces_at_its_threshold():
    y, p = _multiclass_data()
    op = sensitivity_at_specificity(y, p, 0.9, positive=[1, 2])
    assert sensitivity(y, p, threshold=op.threshold, positive=[1, 2]) == pytest.approx(op.sensitivity)
    assert specificity(y, p, threshold=op.threshold, positive=[1, 2]) == pytest.approx(op.specificity)
    assert json.loads(json.dumps(op.to_dict()))["rule"] == "sensitivity_at_specificity>=0.9"


def test_single_class_gives_nan_with_a_reason_and_no_crash():
    y = np.zeros(20, dtype=int)
    s = np.linspace(0, 1, 20)
    for fn in (sensitivity, auroc, auprc, weighted_balanced_accuracy):
        with pytest.warns(UndefinedMetricWarning, match="undefined"):
            assert math.isnan(fn(y, s))
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        op = sensitivity_at_specificity(y, s, 0.9)
    assert math.isnan(op.sensitivity) and "only one class" in op.reason
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(specificity(np.ones(5, int), s[:5]))
    with warnings.catch_warnings():  # still defined with one class: no warning
        warnings.simplefilter("error")
        assert specificity(y, s) == pytest.approx(0.5)
        assert brier_score(y, s) == pytest.approx(np.mean(s**2))
        assert expected_cost(y, s, [[0, 1], [5, 0]]) == pytest.approx(0.5)


def test_ppv_undefined_when_nothing_is_called_positive():
    # scikit-learn returns 0 here; an undefined PPV is not a bad PPV.
    with pytest.warns(UndefinedMetricWarning, match="no case is called positive"):
        assert math.isnan(ppv([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9))


@pytest.mark.parametrize(
    ("y", "s", "kwargs", "match"),
    [
        ([], [], {}, "empty"),
        ([0, 1], [0.2], {}, "cases"),
        ([0, 2], [0.2, 0.4], {}, "0 and 1"),
        ([0, 1, 2], np.full((3, 3), 1 / 3), {}, "positive="),
        ([0, 1, 3], np.full((3, 3), 1 / 3), {"positive": 1}, "labels must lie"),
        ([0, 1], np.full((2, 3), 1 / 3), {"positive": 5}, "outside"),
        ([0, 1], [0.2, np.nan], {}, "NaN"),
    ],
)
def test_invalid_inputs_raise(y, s, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sensitivity(y, s, **kwargs)


def test_calibration_rejects_non_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        brier_score([0, 1], [-0.5, 2.0])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0, 1], [0.1, 0.9], n_bins=0)
