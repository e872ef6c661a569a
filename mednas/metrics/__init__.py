"""Clinical metrics: pure functions of predictions and labels, with patient-level bootstrap intervals.

Classification metrics reduce every task to "does this case have the finding?" (``positive=`` names the
finding classes); segmentation metrics work on one case's integer label maps; :func:`bootstrap_ci` and its
fast paths resample patients; :func:`choose_threshold` fixes an operating point on validation data. Nothing
here knows about training, Optuna or configuration.

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
from mednas.metrics._classification import (
    OperatingPoint,
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
from mednas.metrics._operating_point import (
    RuleKind,
    ThresholdRule,
    apply_threshold,
    choose_threshold,
    evaluate_threshold,
)
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

__all__ = [
    "Estimate",
    "LesionRecord",
    "LesionResult",
    "LesionSummary",
    "OperatingPoint",
    "OverlapRule",
    "RuleKind",
    "SizeBin",
    "ThresholdRule",
    "UndefinedMetricWarning",
    "apply_threshold",
    "auprc",
    "auroc",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "brier_score",
    "choose_threshold",
    "dice",
    "dice_per_class",
    "evaluate_threshold",
    "expected_calibration_error",
    "expected_cost",
    "fbeta",
    "finding_score",
    "hd95",
    "lesion_analysis",
    "net_benefit",
    "npv",
    "patient_resamples",
    "ppv",
    "sensitivity",
    "sensitivity_at_specificity",
    "sensitivity_by_size",
    "specificity",
    "specificity_at_sensitivity",
    "summarize_lesions",
    "weighted_balanced_accuracy",
]
