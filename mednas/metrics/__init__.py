"""Clinical metrics: pure functions of predictions and labels, with patient-level bootstrap intervals.

Classification metrics reduce every task to "does this case have the finding?" (``positive=`` names the
finding classes); segmentation metrics work on one case's integer label maps; :func:`bootstrap_ci` and its
fast paths resample patients; :func:`choose_threshold` fixes an operating point on validation data. Nothing
here knows about training or Optuna.

The objective's terms are an extension point: a :class:`BaseMetricTerm` registered with
:func:`register_metric` (built-ins and plugins alike; plugins through the ``mednas.metrics`` entry-point group).

Example:
    >>> from mednas.metrics import sensitivity_at_specificity
    >>> sensitivity_at_specificity([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5).sensitivity
    1.0
"""

from __future__ import annotations

from mednas.metrics._bootstrap import (
    Estimate,
    bootstrap_ci,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    patient_resamples,
)
from mednas.metrics._calibration import (
    apply_temperature,
    calibration_record,
    fit_temperature,
    logits_from_probabilities,
    operating_point_warnings,
)
from mednas.metrics._classification import (
    OperatingPoint,
    UndefinedMetricWarning,
    accuracy,
    auprc,
    auroc,
    brier_score,
    expected_calibration_error,
    expected_cost,
    fbeta,
    finding_score,
    net_benefit,
    npv,
    per_class_metrics,
    ppv,
    predicted_classes,
    sensitivity,
    sensitivity_at_specificity,
    specificity,
    specificity_at_sensitivity,
    weighted_balanced_accuracy,
)
from mednas.metrics._operating_point import (
    RuleKind,
    ThresholdRule,
    apply_threshold,
    choose_threshold,
    evaluate_threshold,
)
from mednas.metrics._resampled import Resamples
from mednas.metrics._segmentation import (
    LesionRecord,
    LesionResult,
    LesionSummary,
    OverlapRule,
    SizeBin,
    dice,
    dice_per_class,
    hd95,
    lesion_analysis,
    sensitivity_by_size,
    summarize_lesions,
)
from mednas.metrics._terms import (
    METRICS,
    BaseMetricTerm,
    MetricInputs,
    MetricTermConfig,
    list_metrics,
    metric_term,
    register_metric,
)

__all__ = [
    "METRICS",
    "BaseMetricTerm",
    "Estimate",
    "LesionRecord",
    "LesionResult",
    "LesionSummary",
    "MetricInputs",
    "MetricTermConfig",
    "OperatingPoint",
    "OverlapRule",
    "Resamples",
    "RuleKind",
    "SizeBin",
    "ThresholdRule",
    "UndefinedMetricWarning",
    "accuracy",
    "apply_temperature",
    "apply_threshold",
    "auprc",
    "auroc",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "brier_score",
    "calibration_record",
    "choose_threshold",
    "dice",
    "dice_per_class",
    "evaluate_threshold",
    "expected_calibration_error",
    "expected_cost",
    "fbeta",
    "finding_score",
    "fit_temperature",
    "hd95",
    "list_metrics",
    "lesion_analysis",
    "logits_from_probabilities",
    "metric_term",
    "net_benefit",
    "npv",
    "operating_point_warnings",
    "patient_resamples",
    "per_class_metrics",
    "ppv",
    "predicted_classes",
    "register_metric",
    "sensitivity",
    "sensitivity_at_specificity",
    "sensitivity_by_size",
    "specificity",
    "specificity_at_sensitivity",
    "summarize_lesions",
    "weighted_balanced_accuracy",
]
