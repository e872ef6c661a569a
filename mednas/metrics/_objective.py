"""The task's clinical objective, composed from the metric functions: one term or a weighted sum.

:func:`evaluate_objective` is cheap and runs after every epoch (it feeds pruning); :func:`objective_report`
runs once per finished candidate and adds the operating point, every clinical metric, and percentile-bootstrap
intervals computed by resampling patients (all metrics from the same resamples, in one pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mednas.config import TaskConfig
from mednas.config._models import METRIC_DIRECTIONS

__all__ = [
    "combine",
    "constraint_violations",
    "evaluate_objective",
    "objective_report",
    "operating_rule",
    "prediction_record",
    "segmentation_case_stats",
]


# ------------------------------------------------------------------------------------------ classification


def operating_rule(task: TaskConfig) -> Any:
    """The :class:`~mednas.metrics.ThresholdRule` of the task (declared, or derived from the first term)."""
    from mednas.metrics._operating_point import ThresholdRule

    op = task.objective.operating_point
    if op.rule is not None:
        cost = tuple(tuple(float(v) for v in row) for row in op.cost_matrix) if op.cost_matrix else None
        return ThresholdRule(op.rule, target=op.target, beta=op.beta, cost_matrix=cost)  # type: ignore[arg-type]
    first = task.objective.terms[0]
    if first.metric == "sensitivity_at_specificity":
        return ThresholdRule("sensitivity_at_specificity", target=first.min_specificity)
    if first.metric == "specificity_at_sensitivity":
        return ThresholdRule("specificity_at_sensitivity", target=first.min_sensitivity)
    if first.metric == "expected_cost":
        return ThresholdRule("min_cost", cost_matrix=tuple(tuple(float(v) for v in r) for r in first.cost_matrix))  # type: ignore[arg-type]
    if first.metric == "fbeta":
        return ThresholdRule("fbeta", beta=first.beta)
    return ThresholdRule("youden")


def _truth_score(task: TaskConfig, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from mednas.metrics._classification import finding_score

    findings = task.labels.finding_indices
    truth = np.isin(labels, findings).astype(int)
    return truth, finding_score(probs, positive=findings)


def _classification_values(
    task: TaskConfig, truth: np.ndarray, score: np.ndarray, threshold: float, *, full: bool, fixed: bool = False
) -> dict[str, float]:
    """Metric values on one (re)sample; ``threshold`` is the operating threshold for threshold-bound metrics.

    ``fixed``: the threshold was chosen elsewhere (on validation, applied to test). The two floor metrics are
    then the rate *at that threshold* (sensitivity at the validation threshold, whatever specificity it
    reaches here) rather than re-optimised on this data, which would choose a new threshold on test.
    """
    from mednas.metrics import _classification as C

    out: dict[str, float] = {}
    both = bool(truth.any() and not truth.all())
    nan = math.nan
    for term in task.objective.terms:
        m = term.metric
        if fixed and m in ("sensitivity_at_specificity", "specificity_at_sensitivity"):
            fn_rate = C.sensitivity if m == "sensitivity_at_specificity" else C.specificity
            out[m] = fn_rate(truth, score, threshold=threshold) if both and not math.isnan(threshold) else nan
        elif m == "sensitivity_at_specificity":
            out[m] = C.sensitivity_at_specificity(truth, score, term.min_specificity).sensitivity if both else nan
        elif m == "specificity_at_sensitivity":
            out[m] = C.specificity_at_sensitivity(truth, score, term.min_sensitivity).specificity if both else nan
        elif m == "auroc":
            out[m] = C.auroc(truth, score) if both else nan
        elif m == "auprc":
            out[m] = C.auprc(truth, score) if truth.any() else nan
        elif m == "fbeta":
            out[m] = C.fbeta(truth, score, threshold=threshold, beta=term.beta)
        elif m == "weighted_balanced_accuracy":
            out[m] = C.weighted_balanced_accuracy(truth, score, threshold=threshold, weight=term.sensitivity_weight)
        elif m == "expected_cost":
            out[m] = C.expected_cost(truth, score, term.cost_matrix, threshold=threshold)
        elif m == "net_benefit":
            out[m] = C.net_benefit(truth, score, threshold_probability=term.threshold_probability)
        elif m == "brier":
            out[m] = C.brier_score(truth, score)
        elif m == "ece":
            out[m] = C.expected_calibration_error(truth, score, n_bins=term.n_bins)
    if full:
        if "auroc" not in out:
            out["auroc"] = C.auroc(truth, score) if both else nan
        if "auprc" not in out:
            out["auprc"] = C.auprc(truth, score) if truth.any() else nan
        if math.isfinite(threshold):
            for name, fn in (("sensitivity", C.sensitivity), ("specificity", C.specificity), ("ppv", C.ppv), ("npv", C.npv),
                             ("accuracy", C.accuracy)):
                out[name] = fn(truth, score, threshold=threshold)
            out["balanced_accuracy"] = C.weighted_balanced_accuracy(truth, score, threshold=threshold) if both else nan
        out.setdefault("brier", C.brier_score(truth, score))
        out.setdefault("ece", C.expected_calibration_error(truth, score))
    return out


# -------------------------------------------------------------------------------------------- segmentation


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


def _lesion_overlap(task: TaskConfig) -> str:
    for t in task.objective.terms:
        if t.metric == "lesion_sensitivity":
            return str(t.overlap)
    return "any"


# ------------------------------------------------------------------------------------------------- combine


def combine(task: TaskConfig, values: dict[str, float]) -> float:
    """``sum(weight * sign * value) / sum(weight)``; ``sign`` is -1 for lower-is-better metrics; NaN if undefined."""
    total = sum(t.weight for t in task.objective.terms)
    acc = 0.0
    for t in task.objective.terms:
        v = values.get(t.metric, math.nan)
        if v is None or not math.isfinite(v):
            return math.nan
        acc += t.weight * METRIC_DIRECTIONS[t.metric] * v
    return acc / total


def _threshold(task: TaskConfig, truth: np.ndarray, score: np.ndarray) -> Any:
    from mednas.metrics._operating_point import choose_threshold

    return choose_threshold(truth, score, operating_rule(task))


def evaluate_objective(task: TaskConfig, outputs: np.ndarray, data: Any) -> tuple[float, dict[str, float]]:
    """Score predictions by the task's objective (cheap: runs after every epoch).

    Args:
        task: The task (objective terms, finding classes, operating-point rule).
        outputs: Classification probabilities ``(N, C)`` or segmentation label maps ``(N, *S)``.
        data: The :class:`~mednas.data.ArrayData` the outputs belong to.

    Returns:
        ``(objective, {metric: value})``; the objective is NaN when a term is undefined (one class only).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.problem == "classification":
            truth, score = _truth_score(task, outputs, data.labels)
            needs_threshold = any(t.metric in ("fbeta", "weighted_balanced_accuracy", "expected_cost") for t in task.objective.terms)
            thr = _threshold(task, truth, score).threshold if needs_threshold and truth.any() and not truth.all() else math.nan
            values = _classification_values(task, truth, score, thr, full=False)
        else:
            values = _segmentation_values(segmentation_case_stats(task, outputs, data.labels, _lesion_overlap(task)))
    return combine(task, values), values


# ------------------------------------------------------------------------------------------------- report


def _bootstrap_all(
    fn: Callable[..., dict[str, float]],
    arrays: Sequence[np.ndarray],
    groups: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap over patients of every metric ``fn`` returns, from the same resamples."""
    from mednas.metrics._bootstrap import patient_resamples

    groups_arr = np.asarray(groups)
    point = fn(*arrays)
    uniq, codes = np.unique(groups_arr, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(len(uniq))]
    draws = patient_resamples(groups_arr, n_resamples=n_resamples, seed=seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for draw in draws:
        idx = np.concatenate([members[g] for g in draw])
        values = fn(*[a[idx] for a in arrays])
        for k in samples:
            v = values.get(k, math.nan)
            if v is not None and math.isfinite(v):
                samples[k].append(float(v))
    return _intervals(point, samples, confidence)


def _intervals(point: dict[str, float], samples: dict[str, Any], confidence: float) -> dict[str, dict[str, Any]]:
    """``{name: {value, ci95, n_resamples}}``: percentile intervals of each metric's finite resample values."""
    alpha = (1.0 - confidence) / 2
    out: dict[str, dict[str, Any]] = {}
    for k, v in point.items():
        s = samples[k]
        ci = [float(np.percentile(s, 100 * alpha)), float(np.percentile(s, 100 * (1 - alpha)))] if len(s) else [None, None]
        value = float(v) if v is not None and math.isfinite(v) else None
        out[k] = {"value": value, "ci95": ci if value is not None else [None, None], "n_resamples": len(s)}
    return out


#: Bound on the (resamples x cases) weight matrix the vectorised classification bootstrap holds at once.
_CHUNK_ELEMENTS = 2_000_000


def _bootstrap_classification(
    task: TaskConfig,
    point: dict[str, float],
    arrays: Sequence[np.ndarray],
    groups: Sequence[str],
    *,
    threshold: float,
    fixed: bool,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, dict[str, Any]] | None:
    """The classification report's intervals, every resample at once (see :mod:`mednas.metrics._resampled`).

    Gives the numbers :func:`_bootstrap_all` gives with the report's per-resample function (the same patient
    draws, each metric computed on case multiplicities instead of copied cases), in milliseconds instead of
    seconds. Returns None when a metric of ``point`` has no vectorised form here; the caller then falls back.
    """
    from mednas.metrics._bootstrap import _group_codes, patient_resamples
    from mednas.metrics._resampled import case_weights

    codes, n_groups = _group_codes(np.asarray(groups))
    draws = patient_resamples(np.asarray(groups), n_resamples=n_resamples, seed=seed)
    n_cases = max(1, codes.shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // n_cases)
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, n_resamples, chunk):
        weights = case_weights(draws[lo : lo + chunk], codes, n_groups)
        stats = _resampled_classification_values(task, arrays, weights, threshold, fixed)
        if stats is None or any(k not in stats for k in point):
            return None
        parts.append(stats)
    samples = {}
    for k in point:
        s = np.concatenate([p[k] for p in parts])
        samples[k] = s[np.isfinite(s)]
    return _intervals(point, samples, confidence)


def _resampled_classification_values(
    task: TaskConfig, arrays: Sequence[np.ndarray], weights: np.ndarray, thr: float, fixed: bool
) -> dict[str, np.ndarray] | None:
    """:func:`_classification_values` (``full=True``), the objective and the per-class rates of every resample.

    ``arrays`` are the report's ``(truth, score, labels, called)``; ``weights`` ``(B, N)`` case multiplicities.
    Returns ``{metric: (B,) values}`` (``nan`` where undefined), or None for a metric without a vectorised form.
    """
    from mednas.metrics._resampled import confusion_counts, resampled_curves

    truth, score, labels, called = (np.asarray(a) for a in arrays)
    t = truth.astype(bool)
    total = weights.sum(axis=1)
    pos = weights @ t.astype(float)
    neg = total - pos
    both = (pos > 0) & (neg > 0)
    nan = np.full(weights.shape[0], math.nan)
    clipped = np.clip(score.astype(float), 0.0, 1.0)

    def rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), math.nan)

    cache: dict[str, Any] = {}

    def curves() -> Any:
        if "curves" not in cache:
            cache["curves"] = resampled_curves(weights, t, score.astype(float))
        return cache["curves"]

    def counts() -> tuple[np.ndarray, ...] | None:
        if math.isnan(thr):
            return None
        if "counts" not in cache:
            cache["counts"] = confusion_counts(weights, t, score >= thr)
        return cache["counts"]

    def ece(n_bins: int) -> np.ndarray:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        bins = np.searchsorted(edges[1:-1], clipped)
        gaps = np.zeros((t.shape[0], n_bins))
        gaps[np.arange(t.shape[0]), bins] = t.astype(float) - clipped
        return np.abs(weights @ gaps).sum(axis=1) / total

    out: dict[str, np.ndarray] = {}
    for term in task.objective.terms:
        m = term.metric
        if fixed and m in ("sensitivity_at_specificity", "specificity_at_sensitivity"):
            c = counts()
            if c is None:
                out[m] = nan
                continue
            tp, fp, tn, fn = c
            out[m] = np.where(both, rate(tp, tp + fn) if m == "sensitivity_at_specificity" else rate(tn, tn + fp), math.nan)
        elif m == "sensitivity_at_specificity":
            out[m] = curves().sensitivity_at_specificity(term.min_specificity)
        elif m == "specificity_at_sensitivity":
            out[m] = curves().specificity_at_sensitivity(term.min_sensitivity)
        elif m == "auroc":
            out[m] = curves().auroc()
        elif m == "auprc":
            out[m] = curves().average_precision()
        elif m in ("fbeta", "weighted_balanced_accuracy", "expected_cost"):
            c = counts()
            if c is None:
                return None  # undefined threshold: the per-resample functions decide what that means
            tp, fp, tn, fn = c
            if m == "fbeta":
                b2 = term.beta * term.beta
                out[m] = rate((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)
            elif m == "weighted_balanced_accuracy":
                w = term.sensitivity_weight
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[m] = np.where(both, w * tp / pos + (1 - w) * tn / neg, math.nan)
            else:
                cost = np.asarray(term.cost_matrix, dtype=float)
                if cost.shape != (2, 2):
                    return None
                out[m] = (tn * cost[0, 0] + fp * cost[0, 1] + fn * cost[1, 0] + tp * cost[1, 1]) / total
        elif m == "net_benefit":
            pt = term.threshold_probability
            tp, fp, _, _ = confusion_counts(weights, t, score >= pt)
            out[m] = tp / total - fp / total * pt / (1 - pt)
        elif m == "brier":
            out[m] = weights @ (clipped - t) ** 2 / total
        elif m == "ece":
            out[m] = ece(term.n_bins)
        else:
            return None
    if "auroc" not in out:
        out["auroc"] = curves().auroc()
    if "auprc" not in out:
        out["auprc"] = curves().average_precision()
    if math.isfinite(thr):
        tp, fp, tn, fn = counts()  # type: ignore[misc]
        out["sensitivity"], out["specificity"] = rate(tp, tp + fn), rate(tn, tn + fp)
        out["ppv"], out["npv"] = rate(tp, tp + fp), rate(tn, tn + fn)
        out["accuracy"] = rate(tp + tn, tp + fp + tn + fn)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["balanced_accuracy"] = np.where(both, 0.5 * tp / pos + (1 - 0.5) * tn / neg, math.nan)
    out.setdefault("brier", weights @ (clipped - t) ** 2 / total)
    out.setdefault("ece", ece(10))
    terms = task.objective.terms
    acc = np.zeros(weights.shape[0])
    for term in terms:
        acc = acc + term.weight * METRIC_DIRECTIONS[term.metric] * out[term.metric]
    out["objective"] = acc / sum(term.weight for term in terms)
    y = labels.astype(np.intp)
    c_ = called.astype(np.intp)
    k = task.n_classes
    cols = np.concatenate([(y[:, None] == np.arange(k)) & (c_[:, None] == np.arange(k)),
                           y[:, None] == np.arange(k), c_[:, None] == np.arange(k)], axis=1).astype(float)
    per = weights @ cols
    for i in range(k):
        tp_i, n_true, n_called = per[:, i], per[:, k + i], per[:, 2 * k + i]
        out[f"class{i}_recall"] = rate(tp_i, n_true)
        out[f"class{i}_ppv"] = rate(tp_i, n_called)
        out[f"class{i}_n"] = n_true
    return out


def objective_report(
    task: TaskConfig,
    outputs: np.ndarray,
    data: Any,
    *,
    seed: int,
    n_resamples: int | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Every clinical metric with its bootstrap interval over patients, and the operating point.

    Args:
        task: The task.
        outputs: Probabilities ``(N, C)`` or label maps ``(N, *S)``.
        data: The :class:`~mednas.data.ArrayData` the outputs belong to (validation, or test).
        seed: Bootstrap seed.
        n_resamples: Bootstrap resamples (default: ``objective.bootstrap.resamples``).
        threshold: Classification: apply this operating threshold (chosen on validation) instead of choosing
            one on ``data``; this is how test figures are computed.

    Returns:
        ``{"metrics": {name: {"value", "ci95": [low, high], "n_resamples"}}, "operating_point": {...} | None}``;
        ``metrics["objective"]`` is the (weighted) objective itself. Classification adds ``per_class``:
        ``{class name: {"recall": {...}, "ppv": {...}, "n": int}}`` with each case called as ``mednas predict``
        calls it at the operating threshold.
    """
    from mednas.metrics._operating_point import evaluate_threshold

    n = n_resamples or task.objective.bootstrap.resamples
    conf = task.objective.bootstrap.confidence
    op_dict: dict[str, Any] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.problem == "classification":
            truth, score = _truth_score(task, outputs, data.labels)
            if threshold is None:
                op = _threshold(task, truth, score) if truth.any() and not truth.all() else None
            else:
                op = evaluate_threshold(truth, score, float(threshold))
                op = type(op)(op.threshold, op.sensitivity, op.specificity, f"{operating_rule(task)} (chosen on validation)", op.reason)
            op_dict = op.to_dict() if op is not None else None
            thr = op.threshold if op is not None else math.nan
            from mednas.metrics._classification import per_class_metrics, predicted_classes

            called = predicted_classes(np.asarray(outputs), task.labels.finding_indices, thr)
            labels = np.asarray(data.labels).astype(np.int64)

            def fn(t: np.ndarray, s: np.ndarray, y: np.ndarray, c: np.ndarray) -> dict[str, float]:
                values = _classification_values(task, t, s, thr, full=True, fixed=threshold is not None)
                values["objective"] = combine(task, values)
                values.update(per_class_metrics(y, c, task.n_classes))
                return values

            arrays = [truth, score, labels, called]
            metrics = _bootstrap_classification(task, fn(*arrays), arrays, data.patients, threshold=thr,
                                                fixed=threshold is not None, n_resamples=n, seed=seed, confidence=conf)
            if metrics is None:  # a metric without a vectorised form: one call per resample
                metrics = _bootstrap_all(fn, arrays, data.patients, n_resamples=n, seed=seed, confidence=conf)
            per_class = {}
            for i, name in enumerate(task.labels.names):
                rec = {k: metrics.pop(f"class{i}_{k}") for k in ("recall", "ppv", "n")}
                rec["n"] = int(rec["n"]["value"] or 0)
                per_class[name] = rec
            return {"metrics": metrics, "operating_point": op_dict, "per_class": per_class}
        else:
            stats = segmentation_case_stats(task, outputs, data.labels, _lesion_overlap(task))

            def fn_seg(st: np.ndarray) -> dict[str, float]:
                values = _segmentation_values(st)
                values["objective"] = combine(task, values)
                return values

            metrics = _bootstrap_all(fn_seg, [stats], data.patients, n_resamples=n, seed=seed, confidence=conf)
    return {"metrics": metrics, "operating_point": op_dict}


def constraint_violations(task: TaskConfig, metrics: dict[str, Any], costs: dict[str, float]) -> list[float]:
    """Optuna constraint values (<= 0 satisfied) for every declared constraint, in order.

    Args:
        task: The task.
        metrics: Report metrics (``{name: {"value": ...}}``) on validation.
        costs: ``params``, ``macs``, ``activation_mb``, ``latency_ms`` of the candidate.

    An undefined metric counts as violated (``+inf`` would break samplers, so a large finite number is used).
    """
    out = []
    for c in task.objective.constraints:
        value = costs.get(c.metric) if c.metric in costs else (metrics.get(c.metric) or {}).get("value")
        out.append(float(c.violation(float(value))) if value is not None and math.isfinite(float(value)) else 1e9)
    return out


def prediction_record(task: TaskConfig, outputs: np.ndarray, data: Any, *, split: str) -> dict[str, Any]:
    """Per-case results for curves and plots (``predictions.json``): salted case/patient keys only.

    Classification: labels, finding scores and class probabilities (ROC, PR and calibration curves, confusion
    matrix). Segmentation: per-case Dice and lesion counts, and every ground-truth lesion's size and whether it
    was detected (sensitivity by lesion size).
    """
    record: dict[str, Any] = {"split": split, "cases": list(data.keys), "patients": list(data.patients)}
    if task.problem == "classification":
        truth, score = _truth_score(task, outputs, data.labels)
        record.update(labels=[int(v) for v in data.labels], finding=[int(v) for v in truth],
                      scores=[float(v) for v in score], probabilities=np.round(outputs.astype(float), 6).tolist())
        return record
    from mednas.metrics._segmentation import dice, lesion_analysis

    findings = task.labels.finding_indices
    overlap = _lesion_overlap(task)
    cases, lesions = [], []
    for pred, gt in zip(outputs, data.labels):
        res = lesion_analysis(pred, gt, label=findings, overlap=overlap)
        cases.append({"dice": dice(pred, gt, label=findings), "lesions": res.n_lesions, "detected": res.n_detected,
                      "false_positives": res.n_false_positives})
        lesions += [{"size_voxels": r.size_voxels, "detected": bool(r.detected), "dice": float(r.dice)} for r in res.lesions]
    record.update(per_case=cases, lesions=lesions, overlap=overlap)
    return record
