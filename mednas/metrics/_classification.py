"""Clinical classification metrics: sensitivity, specificity, AUROC, operating points, cost, calibration.

Every metric reduces the task to one binary question, "does this case have a finding?", so binary, multi-class
and multi-label models are scored the same way; scikit-learn does the counting wherever it can.

Conventions shared by every function here:

* ``y_true`` is ``(N,)`` integer labels (binary: 0/1; multi-class: ``0..C-1``) or ``(N, C)`` 0/1 indicators
  (multi-label). ``y_score`` is ``(N,)`` probabilities of the positive class (binary) or ``(N, C)``
  per-class probabilities.
* ``positive`` names the finding: one class index or a set of them. For multi-class scores the finding score
  is the *sum* of the finding classes' probabilities (the probability of "any finding"); for multi-label
  scores it is their *maximum*, so thresholding it at ``t`` flags a case exactly when some finding label
  reaches ``t``. Binary scores take ``positive=None`` or ``1``; a two-column multi-class score defaults to 1.
* A case is predicted positive when its finding score is ``>= threshold`` (scikit-learn's ``roc_curve``
  convention), so an operating point chosen on validation reproduces on test.
* Empty inputs raise :class:`ValueError`. A metric whose formula divides by zero (sensitivity with no positive
  case, PPV with no predicted positive, AUROC with one class, ...) returns ``nan`` and emits an
  :class:`UndefinedMetricWarning` that names the reason. A validation set with a single class therefore
  never crashes a search; the objective decides what ``nan`` means.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "OperatingPoint",
    "UndefinedMetricWarning",
    "accuracy",
    "auprc",
    "auroc",
    "brier_score",
    "expected_calibration_error",
    "expected_cost",
    "fbeta",
    "finding_score",
    "net_benefit",
    "npv",
    "per_class_metrics",
    "ppv",
    "predicted_classes",
    "sensitivity",
    "sensitivity_at_specificity",
    "specificity",
    "specificity_at_sensitivity",
    "weighted_balanced_accuracy",
]

Positive = int | Sequence[int] | None


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined on these inputs (e.g. one class only) and was returned as ``nan``."""


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on the finding score and the sensitivity and specificity it gives.

    Attributes:
        threshold: Cases with finding score ``>= threshold`` are called positive. ``inf`` means "call no case
            positive" (the only way to reach some specificity floors); ``nan`` when undefined.
        sensitivity: True-positive rate at ``threshold`` on the data it was computed on.
        specificity: True-negative rate at ``threshold`` on the data it was computed on.
        rule: How the threshold was chosen, e.g. ``"sensitivity_at_specificity>=0.9"`` or ``"fixed"``.
        reason: Why the point is undefined (all fields ``nan``), else ``None``.
    """

    threshold: float
    sensitivity: float
    specificity: float
    rule: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (non-finite floats stay floats; ``mednas.io`` writes null)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------------- inputs


def finding_score(
    y_score: np.ndarray | Sequence[float],
    *,
    positive: Positive = None,
    multilabel: bool = False,
) -> np.ndarray:
    """Reduce model scores to one finding score per case.

    Args:
        y_score: ``(N,)`` positive-class probabilities or ``(N, C)`` per-class probabilities.
        positive: Finding class index or indices (see the module docstring); ``None`` for binary scores.
        multilabel: Treat ``(N, C)`` scores as independent labels (finding score = max) rather than
            mutually exclusive classes (finding score = sum).

    Returns:
        ``(N,)`` float array.

    Raises:
        ValueError: If the scores are empty, not 1-D/2-D, contain NaN, or ``positive`` is invalid.

    Example:
        >>> finding_score([[0.5, 0.3, 0.2]], positive=[1, 2]).tolist()
        [0.5]
    """
    score = np.asarray(y_score, dtype=float)
    if score.size == 0:
        raise ValueError("y_score is empty")
    if np.isnan(score).any():
        raise ValueError("y_score contains NaN")
    if score.ndim == 1:
        if positive is not None and not (np.isscalar(positive) and positive == 1):
            raise ValueError(
                f"binary (N,) scores are probabilities of class 1; positive={positive!r} is invalid"
            )
        return score
    if score.ndim != 2:
        raise ValueError(f"y_score must be (N,) or (N, C), got shape {score.shape}")
    cols = _positive_columns(positive, score.shape[1], multilabel=multilabel)
    sub = score[:, cols]
    return sub.max(axis=1) if multilabel else sub.sum(axis=1)


def _positive_columns(positive: Positive, n_classes: int, *, multilabel: bool) -> list[int]:
    if positive is None:
        if n_classes == 2 and not multilabel:
            return [1]
        if n_classes == 1 and multilabel:
            return [0]
        kind = "multi-label" if multilabel else "multi-class"
        raise ValueError(
            f"{kind} scores with {n_classes} columns need positive= (the finding class or classes)"
        )
    cols = [int(c) for c in positive] if isinstance(positive, (Sequence, np.ndarray)) else [int(positive)]
    if not cols:
        raise ValueError("positive= names no class")
    bad = [c for c in cols if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"positive classes {bad} are outside 0..{n_classes - 1}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"positive classes {cols} repeat a class")
    return cols


def _binary(
    y_true: np.ndarray | Sequence[Any], y_score: np.ndarray | Sequence[Any], positive: Positive
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(truth, score)``: ``(N,)`` bool finding labels and ``(N,)`` float finding scores."""
    truth = np.asarray(y_true)
    score = np.asarray(y_score, dtype=float)
    _check_lengths(truth, score)
    multilabel = truth.ndim == 2
    fscore = finding_score(score, positive=positive, multilabel=multilabel)
    if score.ndim == 2 and not multilabel:
        cols = _positive_columns(positive, score.shape[1], multilabel=False)
        return np.isin(_class_labels(truth, score.shape[1]), cols), fscore
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("binary and multi-label y_true must contain only 0 and 1")
    if score.ndim == 1:
        if truth.ndim != 1:
            raise ValueError(f"binary y_true must be (N,), got shape {truth.shape}")
        return truth.astype(bool), fscore
    if truth.shape != score.shape:
        raise ValueError(
            f"multi-label y_true {truth.shape} and y_score {score.shape} must have the same shape"
        )
    cols = _positive_columns(positive, score.shape[1], multilabel=True)
    return np.asarray(truth[:, cols].astype(bool).any(axis=1)), fscore


def _check_lengths(truth: np.ndarray, score: np.ndarray) -> None:
    if truth.size == 0 or score.size == 0:
        raise ValueError("y_true and y_score must not be empty")
    if truth.ndim not in (1, 2):
        raise ValueError(f"y_true must be (N,) or (N, C), got shape {truth.shape}")
    if truth.shape[0] != score.shape[0]:
        raise ValueError(f"y_true has {truth.shape[0]} cases but y_score has {score.shape[0]}")


def _class_labels(truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Validate ``(N,)`` multi-class labels against ``n_classes`` score columns; return them as int."""
    if truth.ndim != 1:
        raise ValueError(f"multi-class y_true must be (N,) labels, got shape {truth.shape}")
    labels = truth.astype(int)
    if not np.array_equal(labels, truth):
        raise ValueError("multi-class y_true must hold integer class labels")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"multi-class y_true labels must lie in 0..{n_classes - 1}")
    return labels


def _undefined(reason: str, stacklevel: int = 3) -> float:
    warnings.warn(reason, UndefinedMetricWarning, stacklevel=stacklevel)
    return math.nan


def _counts(truth: np.ndarray, score: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """Return ``(tp, fp, tn, fn)`` for finding labels and scores called positive at ``score >= threshold``.

    Same layout as ``sklearn.metrics.confusion_matrix(truth, pred).ravel()`` (the tests check it), counted
    with ``bincount`` because the bootstrap calls this thousands of times and sklearn's input validation
    costs ~1 ms a call against ~3 us here.
    """
    if math.isnan(threshold):
        raise ValueError("threshold is nan (an undefined operating point?)")
    tn, fp, fn, tp = np.bincount(2 * truth.astype(np.intp) + (score >= threshold), minlength=4)
    return int(tp), int(fp), int(tn), int(fn)


def _ratio(num: float, den: float, reason: str) -> float:
    return float(num / den) if den > 0 else _undefined(reason, stacklevel=4)


# ---------------------------------------------------------------------------------- threshold metrics


def sensitivity(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute sensitivity (recall, true-positive rate) at a threshold.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes (see the module docstring).

    Returns:
        TP / (TP + FN); ``nan`` (with :class:`UndefinedMetricWarning`) if no case has the finding.

    Example:
        >>> sensitivity([0, 1, 1], [0.2, 0.7, 0.4])
        0.5
    """
    tp, _, _, fn = _counts(*_binary(y_true, y_score, positive), threshold)
    return _ratio(tp, tp + fn, "sensitivity is undefined: no case has the finding")


def specificity(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute specificity (true-negative rate) at a threshold.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes.

    Returns:
        TN / (TN + FP); ``nan`` (with a warning) if every case has the finding.
    """
    _, fp, tn, _ = _counts(*_binary(y_true, y_score, positive), threshold)
    return _ratio(tn, tn + fp, "specificity is undefined: every case has the finding")


def ppv(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute the positive predictive value (precision) at a threshold.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes.

    Returns:
        TP / (TP + FP); ``nan`` (with a warning) if no case is called positive (scikit-learn returns 0 there).
    """
    tp, fp, _, _ = _counts(*_binary(y_true, y_score, positive), threshold)
    return _ratio(tp, tp + fp, "PPV is undefined: no case is called positive")


def npv(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute the negative predictive value at a threshold.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes.

    Returns:
        TN / (TN + FN); ``nan`` (with a warning) if every case is called positive.
    """
    _, _, tn, fn = _counts(*_binary(y_true, y_score, positive), threshold)
    return _ratio(tn, tn + fn, "NPV is undefined: every case is called positive")


def fbeta(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    beta: float = 1.0,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute the F-beta score at a threshold (beta > 1 weighs sensitivity more than PPV).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        beta: Relative weight of sensitivity; ``beta=2`` is the usual screening choice.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes.

    Returns:
        (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP); ``nan`` (with a warning) when no case has the finding and
        none is called positive.

    Raises:
        ValueError: If ``beta <= 0``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    tp, fp, _, fn = _counts(*_binary(y_true, y_score, positive), threshold)
    b2 = beta * beta
    return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, "F-beta is undefined: no finding, none called")


def accuracy(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute accuracy of the finding decision at a threshold: ``(TP + TN) / N``.

    Example:
        >>> accuracy([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.1])
        0.75
    """
    tp, fp, tn, fn = _counts(*_binary(y_true, y_score, positive), threshold)
    return _ratio(tp + tn, tp + fp + tn + fn, "accuracy is undefined: no case")


def predicted_classes(
    probs: np.ndarray, finding_indices: Sequence[int], threshold: float | None
) -> np.ndarray:
    """Return the class each case is called at the operating threshold, ``(N,)``.

    A case whose finding score (summed probability of ``finding_indices``) is ``>= threshold`` takes the most
    probable finding class, any other case the most probable non-finding class; without a threshold (``None``
    or not finite), the most probable class. This is what ``mednas predict`` labels a case.
    """
    p = np.asarray(probs, dtype=np.float64)
    if threshold is None or not math.isfinite(threshold):
        return p.argmax(axis=1)
    findings = list(finding_indices)
    others = [i for i in range(p.shape[1]) if i not in findings] or findings
    called = p[:, findings].sum(axis=1) >= threshold
    best_f = np.asarray(findings)[p[:, findings].argmax(axis=1)]
    best_o = np.asarray(others)[p[:, others].argmax(axis=1)]
    return np.where(called, best_f, best_o)


def per_class_metrics(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    """Per-class recall (sensitivity), PPV (precision) and count, flat for the bootstrap.

    Args:
        labels: ``(N,)`` true classes.
        predicted: ``(N,)`` called classes (:func:`predicted_classes`).
        n_classes: Number of classes.

    Returns:
        ``{"class<i>_recall", "class<i>_ppv", "class<i>_n"}`` for every class ``i``; a rate with an empty
        denominator is ``nan`` (no warning: one class of a bootstrap resample is often empty).

    Example:
        >>> per_class_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)["class1_recall"]
        0.5
    """
    y = np.asarray(labels, dtype=np.intp)
    pr = np.asarray(predicted, dtype=np.intp)
    cm = np.bincount(y * n_classes + pr, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    out: dict[str, float] = {}
    for i in range(n_classes):
        tp, n_true, n_called = cm[i, i], cm[i].sum(), cm[:, i].sum()
        out[f"class{i}_recall"] = float(tp / n_true) if n_true else math.nan
        out[f"class{i}_ppv"] = float(tp / n_called) if n_called else math.nan
        out[f"class{i}_n"] = float(n_true)
    return out


def weighted_balanced_accuracy(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    weight: float = 0.5,
    threshold: float = 0.5,
    positive: Positive = None,
) -> float:
    """Compute sensitivity-weighted balanced accuracy ``weight * sens + (1 - weight) * spec``.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        weight: Weight of sensitivity in [0, 1]; 0.5 is scikit-learn's balanced accuracy.
        threshold: Finding scores ``>= threshold`` are called positive.
        positive: Finding class or classes.

    Returns:
        The weighted mean; ``nan`` (with a warning) if only one class is present.

    Raises:
        ValueError: If ``weight`` is outside [0, 1].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")
    tp, fp, tn, fn = _counts(*_binary(y_true, y_score, positive), threshold)
    if tp + fn == 0 or tn + fp == 0:
        return _undefined("weighted balanced accuracy is undefined: only one class is present")
    return float(weight * tp / (tp + fn) + (1 - weight) * tn / (tn + fp))


def net_benefit(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    threshold_probability: float,
    positive: Positive = None,
) -> float:
    """Compute the net benefit of treating cases whose finding probability reaches ``pt`` (decision curves).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold_probability: ``pt`` in (0, 1): the risk at which a clinician would act; it is both the
            threshold and the exchange rate ``pt / (1 - pt)`` of false against true positives.
        positive: Finding class or classes.

    Returns:
        ``TP/N - FP/N * pt / (1 - pt)`` (Vickers & Elkin 2006). Defined for one class too.

    Raises:
        ValueError: If ``threshold_probability`` is outside (0, 1).
    """
    pt = threshold_probability
    if not 0.0 < pt < 1.0:
        raise ValueError(f"threshold_probability must lie in (0, 1), got {pt}")
    truth, score = _binary(y_true, y_score, positive)
    tp, fp, _, _ = _counts(truth, score, pt)
    n = truth.shape[0]
    return float(tp / n - fp / n * pt / (1 - pt))


def expected_cost(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    cost_matrix: np.ndarray | Sequence[Sequence[float]],
    *,
    threshold: float = 0.5,
    positive: Positive = None,
    decision: Literal["threshold", "bayes"] = "threshold",
) -> float:
    """Compute the average per-case cost of the model's decisions under a declared cost matrix.

    A ``(2, 2)`` cost matrix scores the binary finding decision (any score shape, with ``positive``). A
    ``(C, C)`` matrix scores multi-class decisions on ``(N, C)`` scores (``positive`` must be ``None``).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators (multi-label needs a 2x2 matrix).
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        cost_matrix: ``cost[i, j]`` is the cost of predicting class ``j`` for a case of true class ``i``
            (rows true, columns predicted; for 2x2, index 1 is the finding).
        threshold: Binary decisions call finding scores ``>= threshold`` positive.
        positive: Finding class or classes (2x2 matrix only).
        decision: ``"threshold"``: binary uses ``threshold``, multi-class the argmax. ``"bayes"``: each case
            gets the decision with the lowest expected cost under ``y_score`` read as probabilities.

    Returns:
        ``sum(confusion * cost) / N``. Defined for one class too.

    Raises:
        ValueError: If the matrix is not square, has the wrong size, or ``decision`` is unknown.

    Example:
        >>> expected_cost([0, 1], [0.7, 0.2], [[0, 1], [5, 0]])  # one FP (1) and one FN (5)
        3.0
    """
    cost = np.asarray(cost_matrix, dtype=float)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost_matrix must be square (C, C), got shape {cost.shape}")
    if decision not in ("threshold", "bayes"):
        raise ValueError(f"decision must be 'threshold' or 'bayes', got {decision!r}")
    score = np.asarray(y_score, dtype=float)
    truth_arr = np.asarray(y_true)
    multiclass = score.ndim == 2 and truth_arr.ndim == 1 and positive is None
    if cost.shape == (2, 2) and not (multiclass and score.shape[1] != 2):
        truth, fscore = _binary(truth_arr, score, positive)
        labels = truth.astype(int)
        if decision == "bayes":
            pred = np.argmin(np.stack([1 - fscore, fscore], axis=1) @ cost, axis=1)
        else:
            pred = (fscore >= threshold).astype(int)
    else:
        if not multiclass:
            raise ValueError(
                f"a {cost.shape} cost matrix needs multi-class (N, C) scores and positive=None; "
                "use a 2x2 matrix for a binary finding"
            )
        _check_lengths(truth_arr, score)
        if cost.shape[0] != score.shape[1]:
            raise ValueError(f"cost_matrix is {cost.shape} but y_score has {score.shape[1]} classes")
        labels = _class_labels(truth_arr, score.shape[1])
        pred = np.argmin(score @ cost, axis=1) if decision == "bayes" else np.argmax(score, axis=1)
    n_classes = cost.shape[0]
    confusion = confusion_matrix(labels, pred, labels=list(range(n_classes)))
    return float((confusion * cost).sum() / labels.shape[0])


# -------------------------------------------------------------------------------------- ranking metrics


def auroc(
    y_true: np.ndarray | Sequence[Any], y_score: np.ndarray | Sequence[Any], *, positive: Positive = None
) -> float:
    """Compute the area under the ROC curve of the finding score (scikit-learn's ``roc_auc_score``).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        positive: Finding class or classes (one-vs-rest for a single multi-class class).

    Returns:
        AUROC in [0, 1]; ``nan`` (with a warning) if only one class is present.
    """
    truth, score = _binary(y_true, y_score, positive)
    if truth.all() or not truth.any():
        return _undefined("AUROC is undefined: only one class is present")
    return float(roc_auc_score(truth, score))


def auprc(
    y_true: np.ndarray | Sequence[Any], y_score: np.ndarray | Sequence[Any], *, positive: Positive = None
) -> float:
    """Compute the area under the precision-recall curve as average precision (``average_precision_score``).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        positive: Finding class or classes.

    Returns:
        Average precision in [0, 1]; ``nan`` (with a warning) if no case has the finding.
    """
    truth, score = _binary(y_true, y_score, positive)
    if not truth.any():
        return _undefined("AUPRC is undefined: no case has the finding")
    return float(average_precision_score(truth, score))


def _roc(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(threshold, sens, spec)`` at every distinct score, from the highest threshold (``inf``) down.

    ``drop_intermediate=False`` keeps every threshold: a dropped collinear point can be the exact optimum of
    a constrained rule.
    """
    fpr, tpr, thr = roc_curve(truth, score, drop_intermediate=False)
    return thr.astype(float), tpr, 1.0 - fpr


def sensitivity_at_specificity(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    min_specificity: float,
    *,
    positive: Positive = None,
) -> OperatingPoint:
    """Find the highest sensitivity whose specificity is at least ``min_specificity``.

    Candidates are scikit-learn's ``roc_curve`` thresholds. Among thresholds with the same (best) sensitivity
    the highest is returned, which has the highest specificity. ``threshold=inf`` (no case positive) is
    returned when no finite threshold meets the floor.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        min_specificity: Specificity floor in [0, 1].
        positive: Finding class or classes.

    Returns:
        The operating point; all ``nan`` with ``reason`` set (and a warning) if only one class is present.

    Example:
        >>> op = sensitivity_at_specificity([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5)
        >>> (op.threshold, op.sensitivity, op.specificity)
        (0.4, 1.0, 0.5)
    """
    _check_fraction(min_specificity, "min_specificity")
    rule = f"sensitivity_at_specificity>={min_specificity:g}"
    truth, score = _binary(y_true, y_score, positive)
    if truth.all() or not truth.any():
        return _undefined_point(rule, "sensitivity at specificity is undefined: only one class is present")
    thr, sens, spec = _roc(truth, score)
    feasible = spec >= min_specificity - 1e-12
    best = sens[feasible].max()
    # Thresholds decrease along the curve, so the first index reaching `best` is the highest threshold.
    i = int(np.flatnonzero(feasible & (sens >= best))[0])
    return OperatingPoint(float(thr[i]), float(sens[i]), float(spec[i]), rule)


def specificity_at_sensitivity(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    min_sensitivity: float,
    *,
    positive: Positive = None,
) -> OperatingPoint:
    """Find the highest specificity whose sensitivity is at least ``min_sensitivity``.

    Among thresholds with the same (best) specificity the lowest is returned, which has the highest
    sensitivity.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        min_sensitivity: Sensitivity floor in [0, 1].
        positive: Finding class or classes.

    Returns:
        The operating point; all ``nan`` with ``reason`` set (and a warning) if only one class is present.
    """
    _check_fraction(min_sensitivity, "min_sensitivity")
    rule = f"specificity_at_sensitivity>={min_sensitivity:g}"
    truth, score = _binary(y_true, y_score, positive)
    if truth.all() or not truth.any():
        return _undefined_point(rule, "specificity at sensitivity is undefined: only one class is present")
    thr, sens, spec = _roc(truth, score)
    feasible = sens >= min_sensitivity - 1e-12
    best = spec[feasible].max()
    i = int(np.flatnonzero(feasible & (spec >= best))[-1])
    return OperatingPoint(float(thr[i]), float(sens[i]), float(spec[i]), rule)


def _undefined_point(rule: str, reason: str) -> OperatingPoint:
    """Warn with ``reason`` and return an all-``nan`` operating point (shared with ``choose_threshold``)."""
    warnings.warn(reason, UndefinedMetricWarning, stacklevel=3)
    return OperatingPoint(math.nan, math.nan, math.nan, rule, reason)


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


# ----------------------------------------------------------------------------------------- calibration


def brier_score(
    y_true: np.ndarray | Sequence[Any], y_score: np.ndarray | Sequence[Any], *, positive: Positive = None
) -> float:
    """Compute the Brier score of the finding probability (scikit-learn's ``brier_score_loss``).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities in [0, 1].
        positive: Finding class or classes.

    Returns:
        Mean squared error between finding probability and outcome (lower is better). Defined for one class.
    """
    truth, score = _binary(y_true, y_score, positive)
    _check_probabilities(score)
    score = np.clip(score, 0.0, 1.0)
    return float(brier_score_loss(truth.astype(int), score, pos_label=1, labels=[0, 1]))


def expected_calibration_error(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    *,
    n_bins: int = 10,
    positive: Positive = None,
) -> float:
    """Compute the expected calibration error of the finding probability over equal-width bins.

    Bins are scikit-learn's ``calibration_curve(strategy="uniform")`` bins: ``n_bins`` equal widths on
    [0, 1], a probability on an inner edge falling in the lower bin.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities in [0, 1].
        n_bins: Number of bins (declared, so runs compare).
        positive: Finding class or classes.

    Returns:
        ``sum_b n_b / N * |observed rate_b - mean probability_b|``. Defined for one class.

    Raises:
        ValueError: If ``n_bins < 1`` or probabilities leave [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    truth, score = _binary(y_true, y_score, positive)
    _check_probabilities(score)
    score = np.clip(score, 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], score)
    gap = np.bincount(bins, weights=truth.astype(float), minlength=n_bins) - np.bincount(
        bins, weights=score, minlength=n_bins
    )
    return float(np.abs(gap).sum() / truth.shape[0])


def _check_probabilities(score: np.ndarray) -> None:
    # A sum of class probabilities may overshoot 1 by rounding; anything further out is not a probability.
    if score.min() < -1e-6 or score.max() > 1.0 + 1e-6:
        raise ValueError("calibration needs probabilities in [0, 1]; the finding scores leave that range")
