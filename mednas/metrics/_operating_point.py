"""Choose a decision threshold on validation data by a declared rule, then apply it unchanged to test data.

A clinical model is used at one operating point, so the search scores it there: the rule is part of the task
(a specificity floor, Youden, F-beta, a cost matrix), never tuned on the test set.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning as SklearnUndefinedMetricWarning

from mednas.metrics._classification import (
    OperatingPoint,
    Positive,
    _binary,
    _counts,
    _roc,
    _undefined_point,
    finding_score,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)

__all__ = ["RuleKind", "ThresholdRule", "apply_threshold", "choose_threshold", "evaluate_threshold"]

RuleKind = Literal["sensitivity_at_specificity", "specificity_at_sensitivity", "youden", "fbeta", "min_cost"]


@dataclass(frozen=True)
class ThresholdRule:
    """A declared rule for picking the operating point.

    Attributes:
        kind: ``"sensitivity_at_specificity"`` (max sensitivity s.t. specificity >= ``target``),
            ``"specificity_at_sensitivity"`` (max specificity s.t. sensitivity >= ``target``), ``"youden"``
            (max sensitivity + specificity - 1), ``"fbeta"`` (max F-beta) or ``"min_cost"`` (min expected cost
            per case under ``cost_matrix``).
        target: The floor for the two constrained rules, in [0, 1].
        beta: The beta of ``"fbeta"``.
        cost_matrix: 2x2 costs for ``"min_cost"``, rows true (0 = no finding, 1 = finding), columns predicted.

    Example:
        >>> str(ThresholdRule("sensitivity_at_specificity", target=0.9))
        'sensitivity_at_specificity>=0.9'
    """

    kind: RuleKind
    target: float | None = None
    beta: float = 1.0
    cost_matrix: tuple[tuple[float, float], tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(RuleKind):
            raise ValueError(f"unknown threshold rule {self.kind!r}; expected one of {get_args(RuleKind)}")
        constrained = self.kind in ("sensitivity_at_specificity", "specificity_at_sensitivity")
        if constrained and (self.target is None or not 0.0 <= self.target <= 1.0):
            raise ValueError(f"rule {self.kind!r} needs target= in [0, 1], got {self.target!r}")
        if not constrained and self.target is not None:
            raise ValueError(f"rule {self.kind!r} takes no target")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.kind == "min_cost":
            if self.cost_matrix is None:
                raise ValueError("rule 'min_cost' needs cost_matrix= (2x2, rows true, columns predicted)")
            cost = np.asarray(self.cost_matrix, dtype=float)
            if cost.shape != (2, 2):
                raise ValueError(f"cost_matrix must be 2x2, got shape {cost.shape}")
            object.__setattr__(self, "cost_matrix", tuple(tuple(float(v) for v in row) for row in cost))
        elif self.cost_matrix is not None:
            raise ValueError(f"rule {self.kind!r} takes no cost_matrix")

    def __str__(self) -> str:
        if self.kind == "sensitivity_at_specificity":
            return f"sensitivity_at_specificity>={self.target:g}"
        if self.kind == "specificity_at_sensitivity":
            return f"specificity_at_sensitivity>={self.target:g}"
        if self.kind == "fbeta":
            return f"fbeta(beta={self.beta:g})"
        if self.kind == "min_cost":
            return f"min_cost({[list(r) for r in self.cost_matrix or ()]})"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-ready dict that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.target is not None:
            out["target"] = self.target
        if self.kind == "fbeta":
            out["beta"] = self.beta
        if self.cost_matrix is not None:
            out["cost_matrix"] = [list(r) for r in self.cost_matrix]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdRule:
        """Build a rule from a mapping with keys ``kind`` and optionally ``target``, ``beta``, ``cost_matrix``.

        Raises:
            ValueError: On unknown keys or invalid values.
        """
        unknown = set(data) - {"kind", "target", "beta", "cost_matrix"}
        if unknown:
            raise ValueError(f"unknown threshold-rule keys {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("threshold rule needs 'kind'")
        cost = data.get("cost_matrix")
        return cls(
            kind=data["kind"],
            target=data.get("target"),
            beta=float(data.get("beta", 1.0)),
            cost_matrix=None if cost is None else tuple(tuple(r) for r in cost),  # type: ignore[arg-type]
        )


def choose_threshold(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    rule: ThresholdRule | Mapping[str, Any],
    *,
    positive: Positive = None,
) -> OperatingPoint:
    """Choose the operating point on (validation) data by a declared rule.

    Candidates are every distinct score (scikit-learn's ``roc_curve`` with ``drop_intermediate=False``) plus
    ``inf`` (no case positive). Ties go to the highest threshold, except ``specificity_at_sensitivity``, which
    among equally specific thresholds takes the lowest (the most sensitive).

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        rule: A :class:`ThresholdRule` or its dict form.
        positive: Finding class or classes (see :mod:`mednas.metrics`).

    Returns:
        The chosen :class:`OperatingPoint` with the sensitivity and specificity it has on these data. When the
        rule needs both classes and one is missing, every field is ``nan`` and ``reason`` says why (with an
        :class:`~mednas.metrics.UndefinedMetricWarning`); ``min_cost`` still picks a threshold then.

    Example:
        >>> rule = ThresholdRule("specificity_at_sensitivity", target=0.9)
        >>> op = choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], rule)
        >>> op.threshold, op.specificity
        (0.4, 0.5)
    """
    if not isinstance(rule, ThresholdRule):
        rule = ThresholdRule.from_dict(rule)
    if rule.kind == "sensitivity_at_specificity":
        return sensitivity_at_specificity(y_true, y_score, float(rule.target), positive=positive)  # type: ignore[arg-type]
    if rule.kind == "specificity_at_sensitivity":
        return specificity_at_sensitivity(y_true, y_score, float(rule.target), positive=positive)  # type: ignore[arg-type]
    truth, score = _binary(y_true, y_score, positive)
    n_pos = int(truth.sum())
    n_neg = truth.shape[0] - n_pos
    name = str(rule)
    if rule.kind == "youden" and (n_pos == 0 or n_neg == 0):
        return _undefined_point(name, "Youden's J is undefined: only one class is present")
    if rule.kind == "fbeta" and n_pos == 0:
        return _undefined_point(name, "F-beta threshold is undefined: no case has the finding")
    with warnings.catch_warnings():
        # One class (allowed for min_cost) makes roc_curve warn and fill one rate with nan; counts below are exact.
        warnings.simplefilter("ignore", SklearnUndefinedMetricWarning)
        thr, sens, spec = _roc(truth, score)
    tp = np.rint(np.nan_to_num(sens) * n_pos)
    fp = np.rint((1.0 - np.nan_to_num(spec, nan=1.0)) * n_neg)
    if rule.kind == "youden":
        objective = sens + spec - 1.0
    elif rule.kind == "fbeta":
        b2 = rule.beta**2
        objective = (1 + b2) * tp / ((1 + b2) * tp + b2 * (n_pos - tp) + fp)
    else:
        (c00, c01), (c10, c11) = rule.cost_matrix  # type: ignore[misc]
        fn, tn = n_pos - tp, n_neg - fp
        objective = -(tn * c00 + fp * c01 + fn * c10 + tp * c11) / truth.shape[0]
    i = int(np.flatnonzero(objective >= objective.max() - 1e-12)[0])
    reason = None
    if n_pos == 0 or n_neg == 0:
        reason = (
            "only one class is present: " + ("sensitivity" if n_pos == 0 else "specificity") + " is undefined"
        )
    s = float(sens[i]) if n_pos else math.nan
    p = float(spec[i]) if n_neg else math.nan
    return OperatingPoint(float(thr[i]), s, p, name, reason)


def apply_threshold(
    y_score: np.ndarray | Sequence[Any],
    threshold: float | OperatingPoint,
    *,
    positive: Positive = None,
    multilabel: bool = False,
) -> np.ndarray:
    """Call cases positive whose finding score reaches a threshold chosen earlier.

    Args:
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: A threshold or the :class:`OperatingPoint` that holds it.
        positive: Finding class or classes, as when the threshold was chosen.
        multilabel: ``(N, C)`` scores are independent labels (see :func:`finding_score`).

    Returns:
        ``(N,)`` bool array, ``True`` where ``finding score >= threshold``.

    Raises:
        ValueError: If the threshold is ``nan`` (an undefined operating point).
    """
    t = threshold.threshold if isinstance(threshold, OperatingPoint) else float(threshold)
    if math.isnan(t):
        raise ValueError("cannot apply an undefined (nan) threshold")
    return finding_score(y_score, positive=positive, multilabel=multilabel) >= t


def evaluate_threshold(
    y_true: np.ndarray | Sequence[Any],
    y_score: np.ndarray | Sequence[Any],
    threshold: float | OperatingPoint,
    *,
    positive: Positive = None,
) -> OperatingPoint:
    """Measure sensitivity and specificity of a fixed threshold, e.g. a validation threshold on test data.

    Args:
        y_true: ``(N,)`` labels or ``(N, C)`` multi-label indicators.
        y_score: ``(N,)`` or ``(N, C)`` probabilities.
        threshold: A threshold or an :class:`OperatingPoint` (its ``rule`` is kept).
        positive: Finding class or classes.

    Returns:
        An :class:`OperatingPoint` with the same threshold; a rate is ``nan`` where its class is absent and
        ``reason`` says so.
    """
    if isinstance(threshold, OperatingPoint):
        t, rule = threshold.threshold, threshold.rule
    else:
        t, rule = float(threshold), "fixed"
    if math.isnan(t):
        raise ValueError("cannot evaluate an undefined (nan) threshold")
    tp, fp, tn, fn = _counts(*_binary(y_true, y_score, positive), t)
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    reason = None
    if not tp + fn or not tn + fp:
        reason = (
            "only one class is present: "
            + ("sensitivity" if not tp + fn else "specificity")
            + " is undefined"
        )
    return OperatingPoint(t, float(sens), float(spec), rule, reason)
