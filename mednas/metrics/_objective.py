"""The task's clinical objective, composed from the metric functions: one term or a weighted sum.

:func:`evaluate_objective` is cheap and runs after every epoch (it feeds pruning); :func:`objective_report`
runs once per finished candidate and adds the operating point and 95% bootstrap intervals over patients.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mednas.config import TaskConfig

__all__ = ["evaluate_objective", "objective_report", "segmentation_case_stats"]


def _finding_truth_score(task: TaskConfig, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    findings = task.labels.finding_indices
    truth = np.isin(labels, findings).astype(int)
    score = probs[:, findings].sum(axis=1)
    return truth, score


def _classification_terms(task: TaskConfig, truth: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from mednas.metrics._classification import auroc, sensitivity_at_specificity, specificity_at_sensitivity

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for term in task.objective.terms:
            if term.metric == "sensitivity_at_specificity":
                out[term.metric] = sensitivity_at_specificity(truth, score, term.min_specificity).sensitivity
            elif term.metric == "specificity_at_sensitivity":
                out[term.metric] = specificity_at_sensitivity(truth, score, term.min_sensitivity).specificity
            elif term.metric == "auroc":
                out[term.metric] = auroc(truth, score)
    return out


def segmentation_case_stats(task: TaskConfig, masks: np.ndarray, labels: np.ndarray, overlap: str = "any") -> np.ndarray:
    """Per-case ``[dice, lesions, detected, false-positive lesions, lesion-wise dice sum]`` rows, ``(N, 5)``.

    Dice is over the finding classes taken together (1.0 when prediction and truth are both empty).
    """
    from mednas.metrics._segmentation import dice, lesion_analysis

    findings = task.labels.finding_indices
    rows = []
    for pred, gt in zip(masks, labels):
        res = lesion_analysis(pred, gt, label=findings, overlap=overlap)
        rows.append([dice(pred, gt, label=findings), res.n_lesions, res.n_detected, res.n_false_positives,
                     sum(r.dice for r in res.lesions)])
    return np.asarray(rows, dtype=float).reshape(-1, 5)


def _segmentation_values(stats: np.ndarray) -> dict[str, float]:
    n_lesions = stats[:, 1].sum()
    denominator = n_lesions + stats[:, 3].sum()
    return {
        "dice": float(stats[:, 0].mean()) if len(stats) else math.nan,
        "lesion_sensitivity": float(stats[:, 2].sum() / n_lesions) if n_lesions else math.nan,
        "false_positive_lesions_per_case": float(stats[:, 3].mean()) if len(stats) else math.nan,
        "lesion_dice": float(stats[:, 4].sum() / denominator) if denominator else 1.0,
    }


def _combine(task: TaskConfig, values: dict[str, float]) -> float:
    total = sum(t.weight for t in task.objective.terms)
    acc = 0.0
    for t in task.objective.terms:
        v = values.get(t.metric, math.nan)
        if not math.isfinite(v):
            return math.nan
        acc += t.weight * v
    return acc / total


def _lesion_overlap(task: TaskConfig) -> str:
    for t in task.objective.terms:
        if t.metric == "lesion_sensitivity":
            return str(t.overlap)
    return "any"


def evaluate_objective(task: TaskConfig, outputs: np.ndarray, val: Any) -> tuple[float, dict[str, float]]:
    """Score validation predictions by the task's objective.

    Args:
        task: The task (objective terms, finding classes).
        outputs: Classification probabilities ``(N, C)`` or segmentation label maps ``(N, *S)``.
        val: The validation :class:`~mednas.data.ArrayData` (labels, patients).

    Returns:
        ``(objective, {metric: value})``; the objective is NaN when a term is undefined (one class only).
    """
    if task.problem == "classification":
        truth, score = _finding_truth_score(task, outputs, val.labels)
        values = _classification_terms(task, truth, score)
    else:
        stats = segmentation_case_stats(task, outputs, val.labels, _lesion_overlap(task))
        values = _segmentation_values(stats)
    return _combine(task, values), values


def _ci(
    fn: Callable[..., float], arrays: Sequence[np.ndarray], groups: Sequence[str], n: int, seed: int
) -> dict[str, Any]:
    from mednas.metrics._bootstrap import bootstrap_ci

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = bootstrap_ci(fn, *arrays, groups=np.asarray(groups), n_resamples=n, seed=seed)
    d = est.to_dict()
    return {"value": d["value"], "ci95": [d["low"], d["high"]], "n_resamples": d.get("n_valid", d.get("n_resamples"))}


def objective_report(task: TaskConfig, outputs: np.ndarray, val: Any, *, seed: int, n_resamples: int = 500) -> dict[str, Any]:
    """Metrics with 95% bootstrap intervals over patients, and the operating point (classification).

    Returns:
        ``{"metrics": {name: {"value", "ci95": [low, high]}}, "operating_point": {...} | None}``; the
        objective itself appears under the key ``"objective"``.
    """
    from mednas.metrics._classification import auprc, auroc, sensitivity, specificity
    from mednas.metrics._operating_point import ThresholdRule, choose_threshold

    groups = list(val.patients)
    metrics: dict[str, Any] = {}
    op_dict: dict[str, Any] | None = None
    if task.problem == "classification":
        truth, score = _finding_truth_score(task, outputs, val.labels)
        first = task.objective.terms[0]
        if first.metric == "sensitivity_at_specificity":
            rule = ThresholdRule("sensitivity_at_specificity", first.min_specificity)
        elif first.metric == "specificity_at_sensitivity":
            rule = ThresholdRule("specificity_at_sensitivity", first.min_sensitivity)
        else:
            rule = ThresholdRule("youden")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op = choose_threshold(truth, score, rule)
        op_dict = op.to_dict()
        thr = op.threshold

        def objective_fn(t: np.ndarray, s: np.ndarray) -> float:
            return _combine(task, _classification_terms(task, t, s))

        metrics["objective"] = _ci(objective_fn, [truth, score], groups, n_resamples, seed)
        for term in task.objective.terms:
            if term.metric not in metrics:
                metrics[term.metric] = _ci(lambda t, s, m=term.metric: _classification_terms(task, t, s)[m], [truth, score], groups, n_resamples, seed)
        metrics.setdefault("auroc", _ci(lambda t, s: auroc(t, s), [truth, score], groups, n_resamples, seed))
        metrics["auprc"] = _ci(lambda t, s: auprc(t, s), [truth, score], groups, n_resamples, seed)
        if math.isfinite(thr):
            metrics["sensitivity"] = _ci(lambda t, s: sensitivity(t, s, threshold=thr), [truth, score], groups, n_resamples, seed)
            metrics["specificity"] = _ci(lambda t, s: specificity(t, s, threshold=thr), [truth, score], groups, n_resamples, seed)
    else:
        stats = segmentation_case_stats(task, outputs, val.labels, _lesion_overlap(task))

        def objective_fn(st: np.ndarray) -> float:
            return _combine(task, _segmentation_values(st))

        metrics["objective"] = _ci(objective_fn, [stats], groups, n_resamples, seed)
        for name in ("dice", "lesion_sensitivity", "false_positive_lesions_per_case", "lesion_dice"):
            metrics[name] = _ci(lambda st, m=name: _segmentation_values(st)[m], [stats], groups, n_resamples, seed)
    return {"metrics": metrics, "operating_point": op_dict}
