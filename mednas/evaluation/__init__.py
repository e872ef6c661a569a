"""External validation of a frozen bundle: ``evaluate_bundle(bundle, data, out=...)`` and ``mednas evaluate``.

A validation team runs an exported bundle on labelled data the model never saw and gets every figure with a
patient-level bootstrap interval: threshold-free metrics, metrics at the bundle's locked operating point, whether
the operating point's promise held, calibration, subgroups, and how many images overlap the training data.

Example:
    >>> from mednas.evaluation import evaluate_bundle
    >>> result = evaluate_bundle("runs/x/bundle", "site-b.yaml", out="validation/")  # doctest: +SKIP
    >>> result.record["operating_point"]["text"]  # doctest: +SKIP
    'specificity >= 0.80 promised, 0.51 [0.47, 0.56] achieved: failed'
"""

from __future__ import annotations

from mednas.evaluation._data import EvalData, case_split, read_eval_data, select_split, subgroup_attributes
from mednas.evaluation._evaluate import EvaluationResult, evaluate_bundle

__all__ = [
    "EvalData",
    "EvaluationResult",
    "case_split",
    "evaluate_bundle",
    "read_eval_data",
    "select_split",
    "subgroup_attributes",
]
