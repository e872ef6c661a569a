"""The task's clinical objective, composed from the metric functions: one term or a weighted sum.

:func:`evaluate_objective` is cheap and runs after every epoch (it feeds pruning); :func:`objective_report`
runs once per finished candidate and adds the operating point, every clinical metric, and percentile-bootstrap
intervals computed by resampling patients (all metrics from the same resamples, in one pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mednas.config import TaskConfig
from mednas.config._models import metric_direction
from mednas.metrics._terms import MetricInputs, metric_term

if TYPE_CHECKING:
    from mednas.metrics._classification import OperatingPoint

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
    rule = metric_term(first.metric).operating_rule(first)
    return rule if rule is not None else ThresholdRule("youden")


def _truth_score(task: TaskConfig, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from mednas.metrics._classification import finding_score

    findings = task.labels.finding_indices
    truth = np.isin(labels, findings).astype(int)
    return truth, finding_score(probs, positive=findings)


def _classification_values(
    task: TaskConfig,
    truth: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    full: bool,
    fixed: bool = False,
) -> dict[str, float]:
    """Metric values on one (re)sample; ``threshold`` is the operating threshold for threshold-bound metrics.

    ``fixed``: the threshold was chosen elsewhere (on validation, applied to test). The two floor metrics are
    then the rate *at that threshold* (sensitivity at the validation threshold, whatever specificity it
    reaches here) rather than re-optimised on this data, which would choose a new threshold on test.
    """
    from mednas.metrics import _classification as C

    both = bool(truth.any() and not truth.all())
    nan = math.nan
    inputs = MetricInputs(
        "classification", truth, score, threshold=threshold, fixed=fixed, findings=task.labels.finding_indices
    )
    out: dict[str, float] = {
        term.metric: metric_term(term.metric).value(term, inputs) for term in task.objective.terms
    }
    if full:
        if "auroc" not in out:
            out["auroc"] = C.auroc(truth, score) if both else nan
        if "auprc" not in out:
            out["auprc"] = C.auprc(truth, score) if truth.any() else nan
        if math.isfinite(threshold):
            for name, fn in (
                ("sensitivity", C.sensitivity),
                ("specificity", C.specificity),
                ("ppv", C.ppv),
                ("npv", C.npv),
                ("accuracy", C.accuracy),
            ):
                out[name] = fn(truth, score, threshold=threshold)
            out["balanced_accuracy"] = (
                C.weighted_balanced_accuracy(truth, score, threshold=threshold) if both else nan
            )
        out.setdefault("brier", C.brier_score(truth, score))
        out.setdefault("ece", C.expected_calibration_error(truth, score))
    return out


# -------------------------------------------------------------------------------------------- segmentation


def segmentation_case_stats(
    task: TaskConfig, masks: np.ndarray, labels: np.ndarray, overlap: str = "any"
) -> np.ndarray:
    """Per-case ``[dice, lesions, detected, false-positive lesions, lesion-wise dice sum]`` rows, ``(N, 5)``.

    Dice is over the finding classes taken together (1.0 when prediction and truth are both empty).
    """
    return case_stats(masks, labels, task.labels.finding_indices, overlap)


def case_stats(masks: Any, labels: Any, findings: Sequence[int], overlap: str = "any") -> np.ndarray:
    """:func:`segmentation_case_stats` for the finding classes ``findings``."""
    from mednas.metrics._segmentation import dice, lesion_analysis

    findings = list(findings)
    rows = []
    for pred, gt in zip(masks, labels):
        res = lesion_analysis(pred, gt, label=findings, overlap=overlap)
        rows.append(
            [
                dice(pred, gt, label=findings),
                res.n_lesions,
                res.n_detected,
                res.n_false_positives,
                sum(r.dice for r in res.lesions),
            ]
        )
    return np.asarray(rows, dtype=float).reshape(-1, 5)


#: Segmentation metrics reported for every task, in this order; the task's other terms follow.
_SEGMENTATION_REPORTED = ("dice", "lesion_sensitivity", "false_positive_lesions_per_case", "lesion_dice")


def _segmentation_terms(task: TaskConfig) -> list[Any]:
    """The term entries scored for a segmentation task: the reported metrics (the task's entry where it names
    one, else the defaults), then the task's other terms."""
    named = {t.metric: t for t in task.objective.terms}
    terms = [named.get(m) or metric_term(m).config(metric=m) for m in _SEGMENTATION_REPORTED]
    return terms + [t for t in task.objective.terms if t.metric not in _SEGMENTATION_REPORTED]


def _segmentation_values(terms: Sequence[Any], inputs: MetricInputs) -> dict[str, float]:
    return {t.metric: metric_term(t.metric).value(t, inputs) for t in terms}


def segmentation_stat_values(stats: np.ndarray) -> dict[str, float]:
    """The reported segmentation metrics (Dice, lesion sensitivity, false-positive lesions per case, lesion
    Dice) of ``(N, 5)`` per-case rows from :func:`segmentation_case_stats`, with the built-in terms' defaults."""
    terms = [metric_term(m).config(metric=m) for m in _SEGMENTATION_REPORTED]
    return _segmentation_values(
        terms, MetricInputs("segmentation", None, None, case_stats=np.asarray(stats)[:, :5])
    )


def _segmentation_inputs(
    task: TaskConfig, masks: Any, labels: Any, stats: np.ndarray, index: np.ndarray | None = None
) -> MetricInputs:
    return MetricInputs(
        "segmentation", labels, masks, findings=task.labels.finding_indices, case_stats=stats, index=index
    )


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
        acc += t.weight * metric_direction(t.metric) * v
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
            needs_threshold = any(metric_term(t.metric).needs_threshold for t in task.objective.terms)
            thr = (
                _threshold(task, truth, score).threshold
                if needs_threshold and truth.any() and not truth.all()
                else math.nan
            )
            values = _classification_values(task, truth, score, thr, full=False)
        else:
            stats = segmentation_case_stats(task, outputs, data.labels, _lesion_overlap(task))
            values = _segmentation_values(
                _segmentation_terms(task), _segmentation_inputs(task, outputs, data.labels, stats)
            )
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


def _intervals(
    point: dict[str, float], samples: dict[str, Any], confidence: float
) -> dict[str, dict[str, Any]]:
    """``{name: {value, ci95, n_resamples}}``: percentile intervals of each metric's finite resample values."""
    alpha = (1.0 - confidence) / 2
    out: dict[str, dict[str, Any]] = {}
    for k, v in point.items():
        s = samples[k]
        ci = (
            [float(np.percentile(s, 100 * alpha)), float(np.percentile(s, 100 * (1 - alpha)))]
            if len(s)
            else [None, None]
        )
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
    Returns ``{metric: (B,) values}`` (``nan`` where undefined), or None for a term without a vectorised form.
    """
    from mednas.metrics._resampled import Resamples

    truth, score, labels, called = (np.asarray(a) for a in arrays)
    r = Resamples(weights, truth, score, thr, fixed=fixed)
    out: dict[str, np.ndarray] = {}
    for term in task.objective.terms:
        values = metric_term(term.metric).resampled(term, r)
        if values is None:
            return None
        out[term.metric] = values
    _resampled_report_extras(r, out)
    acc = np.zeros(r.n)
    for term in task.objective.terms:
        acc = acc + term.weight * metric_direction(term.metric) * out[term.metric]
    out["objective"] = acc / sum(term.weight for term in task.objective.terms)
    out.update(_resampled_per_class(weights, labels, called, task.n_classes))
    return out


def _resampled_report_extras(r: Any, out: dict[str, np.ndarray]) -> None:
    """Add the report's fixed metrics that no term gave (as :func:`_classification_values` with ``full``)."""
    if "auroc" not in out:
        out["auroc"] = r.curves().auroc()
    if "auprc" not in out:
        out["auprc"] = r.curves().average_precision()
    if math.isfinite(r.threshold):
        tp, fp, tn, fn = r.counts()
        out["sensitivity"], out["specificity"] = r.rate(tp, tp + fn), r.rate(tn, tn + fp)
        out["ppv"], out["npv"] = r.rate(tp, tp + fp), r.rate(tn, tn + fn)
        out["accuracy"] = r.rate(tp + tn, tp + fp + tn + fn)
        out["balanced_accuracy"] = r.balanced_accuracy(0.5)
    if "brier" not in out:
        out["brier"] = r.brier()
    if "ece" not in out:
        out["ece"] = r.ece(10)


def _resampled_per_class(
    weights: np.ndarray, labels: np.ndarray, called: np.ndarray, k: int
) -> dict[str, np.ndarray]:
    """Recall, PPV and count of each class ``i`` (``class{i}_recall``, ...) on every resample."""
    from mednas.metrics._resampled import Resamples

    y = labels.astype(np.intp)
    c_ = called.astype(np.intp)
    cols = np.concatenate(
        [
            (y[:, None] == np.arange(k)) & (c_[:, None] == np.arange(k)),
            y[:, None] == np.arange(k),
            c_[:, None] == np.arange(k),
        ],
        axis=1,
    ).astype(float)
    per = weights @ cols
    out: dict[str, np.ndarray] = {}
    for i in range(k):
        tp_i, n_true, n_called = per[:, i], per[:, k + i], per[:, 2 * k + i]
        out[f"class{i}_recall"] = Resamples.rate(tp_i, n_true)
        out[f"class{i}_ppv"] = Resamples.rate(tp_i, n_called)
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
    n = n_resamples or task.objective.bootstrap.resamples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.problem == "classification":
            return _classification_report(task, outputs, data, seed=seed, n_resamples=n, threshold=threshold)
        metrics = _segmentation_report(task, outputs, data, seed=seed, n_resamples=n)
    return {"metrics": metrics, "operating_point": None}


def _report_operating_point(
    task: TaskConfig, truth: np.ndarray, score: np.ndarray, threshold: float | None
) -> OperatingPoint | None:
    """The operating point on these outputs: chosen on them, or ``threshold`` (chosen on validation) applied."""
    from mednas.metrics._operating_point import evaluate_threshold

    if threshold is None:
        return _threshold(task, truth, score) if truth.any() and not truth.all() else None
    op = evaluate_threshold(truth, score, float(threshold))
    return type(op)(
        op.threshold,
        op.sensitivity,
        op.specificity,
        f"{operating_rule(task)} (chosen on validation)",
        op.reason,
    )


def _classification_report(
    task: TaskConfig, outputs: np.ndarray, data: Any, *, seed: int, n_resamples: int, threshold: float | None
) -> dict[str, Any]:
    """:func:`objective_report` for classification: metrics, operating point and per-class recall and PPV."""
    from mednas.metrics._classification import per_class_metrics, predicted_classes

    conf = task.objective.bootstrap.confidence
    truth, score = _truth_score(task, outputs, data.labels)
    op = _report_operating_point(task, truth, score, threshold)
    thr = op.threshold if op is not None else math.nan
    called = predicted_classes(np.asarray(outputs), task.labels.finding_indices, thr)
    labels = np.asarray(data.labels).astype(np.int64)

    def fn(t: np.ndarray, s: np.ndarray, y: np.ndarray, c: np.ndarray) -> dict[str, float]:
        values = _classification_values(task, t, s, thr, full=True, fixed=threshold is not None)
        values["objective"] = combine(task, values)
        values.update(per_class_metrics(y, c, task.n_classes))
        return values

    arrays = [truth, score, labels, called]
    metrics = _bootstrap_classification(
        task,
        fn(*arrays),
        arrays,
        data.patients,
        threshold=thr,
        fixed=threshold is not None,
        n_resamples=n_resamples,
        seed=seed,
        confidence=conf,
    )
    if metrics is None:  # a metric without a vectorised form: one call per resample
        metrics = _bootstrap_all(
            fn, arrays, data.patients, n_resamples=n_resamples, seed=seed, confidence=conf
        )
    per_class = {}
    for i, name in enumerate(task.labels.names):
        rec: dict[str, Any] = {k: metrics.pop(f"class{i}_{k}") for k in ("recall", "ppv", "n")}
        rec["n"] = int(rec["n"]["value"] or 0)
        per_class[name] = rec
    op_dict = op.to_dict() if op is not None else None
    return {"metrics": metrics, "operating_point": op_dict, "per_class": per_class}


def _segmentation_report(
    task: TaskConfig, outputs: np.ndarray, data: Any, *, seed: int, n_resamples: int
) -> dict[str, dict[str, Any]]:
    """:func:`objective_report`'s metrics for segmentation: per-case statistics resampled over patients."""
    stats = segmentation_case_stats(task, outputs, data.labels, _lesion_overlap(task))
    terms = _segmentation_terms(task)

    def fn_seg(st: np.ndarray, rows: np.ndarray) -> dict[str, float]:
        values = _segmentation_values(terms, _segmentation_inputs(task, outputs, data.labels, st, rows))
        values["objective"] = combine(task, values)
        return values

    rows = np.arange(len(stats))
    return _bootstrap_all(
        fn_seg,
        [stats, rows],
        data.patients,
        n_resamples=n_resamples,
        seed=seed,
        confidence=task.objective.bootstrap.confidence,
    )


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
        out.append(
            float(c.violation(float(value))) if value is not None and math.isfinite(float(value)) else 1e9
        )
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
        record.update(
            labels=[int(v) for v in data.labels],
            finding=[int(v) for v in truth],
            scores=[float(v) for v in score],
            probabilities=np.round(outputs.astype(float), 6).tolist(),
        )
        return record
    from mednas.metrics._segmentation import dice, lesion_analysis

    findings = task.labels.finding_indices
    overlap = _lesion_overlap(task)
    cases, lesions = [], []
    for pred, gt in zip(outputs, data.labels):
        res = lesion_analysis(pred, gt, label=findings, overlap=overlap)
        cases.append(
            {
                "dice": dice(pred, gt, label=findings),
                "lesions": res.n_lesions,
                "detected": res.n_detected,
                "false_positives": res.n_false_positives,
            }
        )
        lesions += [
            {"size_voxels": r.size_voxels, "detected": bool(r.detected), "dice": float(r.dice)}
            for r in res.lesions
        ]
    record.update(per_case=cases, lesions=lesions, overlap=overlap)
    return record
