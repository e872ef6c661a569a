"""The built-in objective terms, registered with :func:`~mednas.metrics.register_metric` like any plugin.

Classification terms score the finding ("does this case have a finding?") from the finding score; the
segmentation terms read per-case lesion statistics. Each has the task-file model of the same name in
:mod:`mednas.config._models`. :meth:`~mednas.metrics.BaseMetricTerm.resampled` gives every bootstrap
resample at once where a vectorised form exists.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from mednas.config import _models as cfg
from mednas.metrics._resampled import Resamples
from mednas.metrics._terms import BaseMetricTerm, MetricInputs, register_metric

__all__: list[str] = []

_NAN = math.nan


def _classification() -> Any:
    from mednas.metrics import _classification as C

    return C


def _rule(*args: Any, **kwargs: Any) -> Any:
    from mednas.metrics._operating_point import ThresholdRule

    return ThresholdRule(*args, **kwargs)


# ------------------------------------------------------------------------------------------ classification


@register_metric("sensitivity_at_specificity")
class SensitivityAtSpecificityTerm(BaseMetricTerm):
    """Highest sensitivity at or above the specificity floor; at a fixed threshold, the sensitivity there."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.SensitivityAtSpecificity

    def value(self, term: Any, inputs: MetricInputs) -> float:
        C, truth, score, both = _classification(), inputs.truth, inputs.output, inputs.both_classes
        if inputs.fixed:
            thr = inputs.threshold
            return C.sensitivity(truth, score, threshold=thr) if both and not math.isnan(thr) else _NAN
        return C.sensitivity_at_specificity(truth, score, term.min_specificity).sensitivity if both else _NAN

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        if resamples.fixed:
            c = resamples.counts()
            if c is None:
                return resamples.nan()
            tp, _, _, fn = c
            return np.where(resamples.both, resamples.rate(tp, tp + fn), _NAN)
        return resamples.curves().sensitivity_at_specificity(term.min_specificity)

    def operating_rule(self, term: Any) -> Any:
        return _rule("sensitivity_at_specificity", target=term.min_specificity)


@register_metric("specificity_at_sensitivity")
class SpecificityAtSensitivityTerm(BaseMetricTerm):
    """Highest specificity at or above the sensitivity floor; at a fixed threshold, the specificity there."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.SpecificityAtSensitivity

    def value(self, term: Any, inputs: MetricInputs) -> float:
        C, truth, score, both = _classification(), inputs.truth, inputs.output, inputs.both_classes
        if inputs.fixed:
            thr = inputs.threshold
            return C.specificity(truth, score, threshold=thr) if both and not math.isnan(thr) else _NAN
        return C.specificity_at_sensitivity(truth, score, term.min_sensitivity).specificity if both else _NAN

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        if resamples.fixed:
            c = resamples.counts()
            if c is None:
                return resamples.nan()
            _, fp, tn, _ = c
            return np.where(resamples.both, resamples.rate(tn, tn + fp), _NAN)
        return resamples.curves().specificity_at_sensitivity(term.min_sensitivity)

    def operating_rule(self, term: Any) -> Any:
        return _rule("specificity_at_sensitivity", target=term.min_sensitivity)


@register_metric("auroc")
class AUROCTerm(BaseMetricTerm):
    """Area under the ROC curve (``nan`` with one class)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.AUROC

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().auroc(inputs.truth, inputs.output) if inputs.both_classes else _NAN

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        return resamples.curves().auroc()


@register_metric("auprc")
class AUPRCTerm(BaseMetricTerm):
    """Average precision (``nan`` without a positive case)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.AUPRC

    def value(self, term: Any, inputs: MetricInputs) -> float:
        truth = inputs.truth
        return _classification().auprc(truth, inputs.output) if truth.any() else _NAN

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        return resamples.curves().average_precision()


@register_metric("fbeta")
class FBetaTerm(BaseMetricTerm):
    """F-beta at the operating threshold."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.FBeta
    needs_threshold: ClassVar[bool] = True

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().fbeta(
            inputs.truth, inputs.output, threshold=inputs.threshold, beta=term.beta
        )

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        c = resamples.counts()
        if c is None:
            return None  # undefined threshold: the per-resample function decides what that means
        tp, fp, _, fn = c
        b2 = term.beta * term.beta
        return resamples.rate((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)

    def operating_rule(self, term: Any) -> Any:
        return _rule("fbeta", beta=term.beta)


@register_metric("weighted_balanced_accuracy")
class WeightedBalancedAccuracyTerm(BaseMetricTerm):
    """``w * sensitivity + (1 - w) * specificity`` at the operating threshold."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.WeightedBalancedAccuracy
    needs_threshold: ClassVar[bool] = True

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().weighted_balanced_accuracy(
            inputs.truth, inputs.output, threshold=inputs.threshold, weight=term.sensitivity_weight
        )

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        return resamples.balanced_accuracy(term.sensitivity_weight)


@register_metric("expected_cost")
class ExpectedCostTerm(BaseMetricTerm):
    """Mean cost per case at the operating threshold (lower is better)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.ExpectedCost
    direction: ClassVar[int] = -1
    needs_threshold: ClassVar[bool] = True

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().expected_cost(
            inputs.truth, inputs.output, term.cost_matrix, threshold=inputs.threshold
        )

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        c = resamples.counts()
        cost = np.asarray(term.cost_matrix, dtype=float)
        if c is None or cost.shape != (2, 2):
            return None
        tp, fp, tn, fn = c
        return (tn * cost[0, 0] + fp * cost[0, 1] + fn * cost[1, 0] + tp * cost[1, 1]) / resamples.total

    def operating_rule(self, term: Any) -> Any:
        return _rule("min_cost", cost_matrix=tuple(tuple(float(v) for v in r) for r in term.cost_matrix))


@register_metric("net_benefit")
class NetBenefitTerm(BaseMetricTerm):
    """Net benefit at the term's threshold probability (decision-curve analysis)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.NetBenefit

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().net_benefit(
            inputs.truth, inputs.output, threshold_probability=term.threshold_probability
        )

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        pt = term.threshold_probability
        tp, fp, _, _ = resamples.counts_at(pt)
        return tp / resamples.total - fp / resamples.total * pt / (1 - pt)


@register_metric("brier")
class BrierTerm(BaseMetricTerm):
    """Brier score of the finding probability (lower is better)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.Brier
    direction: ClassVar[int] = -1

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().brier_score(inputs.truth, inputs.output)

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        return resamples.brier()


@register_metric("ece")
class ECETerm(BaseMetricTerm):
    """Expected calibration error (lower is better)."""

    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.ECE
    direction: ClassVar[int] = -1

    def value(self, term: Any, inputs: MetricInputs) -> float:
        return _classification().expected_calibration_error(inputs.truth, inputs.output, n_bins=term.n_bins)

    def resampled(self, term: Any, resamples: Resamples) -> np.ndarray | None:
        return resamples.ece(term.n_bins)


# -------------------------------------------------------------------------------------------- segmentation


def _stats(inputs: MetricInputs) -> np.ndarray:
    if inputs.case_stats is None:
        from mednas.metrics._objective import case_stats

        return case_stats(inputs.output, inputs.truth, inputs.findings, "any")
    return inputs.case_stats


@register_metric("dice")
class DiceTerm(BaseMetricTerm):
    """Mean Dice over cases of the finding classes."""

    problem: ClassVar[str] = "segmentation"
    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.Dice

    def value(self, term: Any, inputs: MetricInputs) -> float:
        stats = _stats(inputs)
        return float(stats[:, 0].mean()) if len(stats) else _NAN


@register_metric("lesion_sensitivity")
class LesionSensitivityTerm(BaseMetricTerm):
    """Detected ground-truth lesions over all of them, pooled over cases (``nan`` without lesions)."""

    problem: ClassVar[str] = "segmentation"
    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.LesionSensitivity

    def value(self, term: Any, inputs: MetricInputs) -> float:
        stats = _stats(inputs)
        n_lesions = stats[:, 1].sum()
        return float(stats[:, 2].sum() / n_lesions) if n_lesions else _NAN


@register_metric("false_positive_lesions_per_case")
class FalsePositiveLesionsTerm(BaseMetricTerm):
    """Predicted lesions touching no true lesion, per case (lower is better)."""

    problem: ClassVar[str] = "segmentation"
    direction: ClassVar[int] = -1
    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.FalsePositiveLesions

    def value(self, term: Any, inputs: MetricInputs) -> float:
        stats = _stats(inputs)
        return float(stats[:, 3].mean()) if len(stats) else _NAN


@register_metric("lesion_dice")
class LesionDiceTerm(BaseMetricTerm):
    """Lesion-wise Dice: missed and false-positive lesions count 0 (1.0 when there are none of either)."""

    problem: ClassVar[str] = "segmentation"
    config: ClassVar[type[cfg.MetricTermConfig]] = cfg.LesionDice

    def value(self, term: Any, inputs: MetricInputs) -> float:
        stats = _stats(inputs)
        denominator = stats[:, 1].sum() + stats[:, 3].sum()
        return float(stats[:, 4].sum() / denominator) if denominator else 1.0
