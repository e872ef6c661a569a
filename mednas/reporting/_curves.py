"""The numbers behind the report's curves: ROC, precision-recall and calibration with patient-bootstrap bands.

Pure functions of per-case predictions (``trials/<n>/predictions.json``); every band and interval resamples
**patients**, as every figure of a mednas run does, so a patient with many images does not narrow a band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Band",
    "calibration_bins",
    "confusion_at_threshold",
    "lesion_sensitivity_by_size",
    "pr_band",
    "roc_band",
    "wilson_interval",
]


@dataclass
class Band:
    """A curve on a fixed grid with its pointwise 95% band: ``y`` and ``low``/``high`` over ``x``.

    ``curve_x``/``curve_y`` are the empirical curve itself (all thresholds); ``n_resamples`` counts the patient
    resamples that had both classes.
    """

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    curve_x: np.ndarray
    curve_y: np.ndarray
    n_resamples: int
    area: float
    area_ci: tuple[float, float] = (math.nan, math.nan)
    extra: dict[str, Any] = field(default_factory=dict)


def roc_band(
    finding: Sequence[int],
    scores: Sequence[float],
    patients: Sequence[Any],
    *,
    n_resamples: int = 200,
    seed: int = 0,
) -> Band:
    """Compute the ROC curve and a pointwise 95% band of sensitivity over false-positive rate.

    Args:
        finding: ``(N,)`` 1 where the case has the finding.
        scores: ``(N,)`` finding probability.
        patients: ``(N,)`` patient key of each case (the resampling unit).
        n_resamples: Patient resamples.
        seed: Seed of the resampling.

    Returns:
        A :class:`Band` over false-positive rate 0..1; ``area`` is the AUROC and ``area_ci`` its 95% interval.

    Example:
        >>> band = roc_band([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], ["a", "b", "c", "d"], n_resamples=50)
        >>> round(band.area, 2)
        0.75
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    from mednas.metrics._bootstrap import patient_resample_indices

    y, s = np.asarray(finding, dtype=int), np.asarray(scores, dtype=float)
    fpr, tpr, _ = roc_curve(y, s)
    grid = np.linspace(0.0, 1.0, 101)
    rows, areas = [], []
    for idx in patient_resample_indices(patients, n_resamples=n_resamples, seed=seed):
        yb, sb = y[idx], s[idx]
        if yb.min() == yb.max():
            continue
        f, t, _ = roc_curve(yb, sb)
        rows.append(np.interp(grid, f, t))
        areas.append(roc_auc_score(yb, sb))
    low, high = _percentiles(rows, grid.size)
    return Band(grid, low, high, fpr, tpr, len(rows), float(roc_auc_score(y, s)), _interval(areas))


def pr_band(
    finding: Sequence[int],
    scores: Sequence[float],
    patients: Sequence[Any],
    *,
    n_resamples: int = 200,
    seed: int = 0,
) -> Band:
    """Compute the precision-recall curve and a pointwise 95% band of (interpolated) precision over recall.

    Returns:
        A :class:`Band` over recall 0..1; ``area`` is the average precision (AUPRC), ``area_ci`` its interval,
        ``extra["prevalence"]`` the finding rate (a classifier without skill has that precision).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from mednas.metrics._bootstrap import patient_resample_indices

    y, s = np.asarray(finding, dtype=int), np.asarray(scores, dtype=float)
    precision, recall, _ = precision_recall_curve(y, s)
    grid = np.linspace(0.0, 1.0, 101)
    rows, areas = [], []
    for idx in patient_resample_indices(patients, n_resamples=n_resamples, seed=seed):
        yb, sb = y[idx], s[idx]
        if yb.min() == yb.max():
            continue
        p, r, _ = precision_recall_curve(yb, sb)
        rows.append(_interpolated_precision(grid, r, p))
        areas.append(average_precision_score(yb, sb))
    low, high = _percentiles(rows, grid.size)
    return Band(
        grid,
        low,
        high,
        recall,
        precision,
        len(rows),
        float(average_precision_score(y, s)),
        _interval(areas),
        extra={"prevalence": float(y.mean())},
    )


def _interpolated_precision(grid: np.ndarray, recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Best precision at recall >= each grid value (the usual interpolation; recall arrives decreasing)."""
    order = np.argsort(recall)
    r, p = recall[order], precision[order]
    best_right = np.maximum.accumulate(p[::-1])[::-1]
    pos = np.searchsorted(r, grid, side="left")
    out = np.zeros_like(grid)
    inside = pos < r.size
    out[inside] = best_right[pos[inside]]
    return out


def _percentiles(rows: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.full(n, np.nan), np.full(n, np.nan)
    stack = np.vstack(rows)
    return np.percentile(stack, 2.5, axis=0), np.percentile(stack, 97.5, axis=0)


def _interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size < 2:
        return (math.nan, math.nan)
    return float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Return the Wilson score 95% interval of a proportion ``k / n`` (``(nan, nan)`` for ``n == 0``).

    Example:
        >>> [round(v, 3) for v in wilson_interval(8, 10)]
        [0.49, 0.943]
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def calibration_bins(
    finding: Sequence[int], scores: Sequence[float], n_bins: int = 10
) -> list[dict[str, float]]:
    """Group cases by predicted probability into equal-width bins: mean prediction, observed rate, Wilson interval.

    Returns:
        One dict per non-empty bin: ``low``, ``high``, ``n``, ``mean_score``, ``observed`` and ``ci95``.
    """
    y, s = np.asarray(finding, dtype=int), np.asarray(scores, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        if n == 0:
            continue
        k = int(y[mask].sum())
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": n,
                "mean_score": float(s[mask].mean()),
                "observed": k / n,
                "ci95": wilson_interval(k, n),
            }
        )
    return out


def confusion_at_threshold(finding: Sequence[int], scores: Sequence[float], threshold: float) -> np.ndarray:
    """Return the 2x2 matrix ``[[TN, FP], [FN, TP]]`` (rows: truth, columns: call) for ``score >= threshold``."""
    y = np.asarray(finding, dtype=int)
    call = np.asarray(scores, dtype=float) >= threshold
    return np.array(
        [
            [int(((y == 0) & ~call).sum()), int(((y == 0) & call).sum())],
            [int(((y == 1) & ~call).sum()), int(((y == 1) & call).sum())],
        ]
    )


def lesion_sensitivity_by_size(
    record: dict[str, Any], *, n_bins: int = 3, n_resamples: int = 500, seed: int = 0
) -> list[dict[str, Any]]:
    """Pool lesion detection by lesion size from a segmentation ``predictions.json`` record.

    Lesions are grouped into ``n_bins`` size bins of equal count (sizes in voxels at the evaluated resolution);
    each bin's sensitivity carries a 95% interval from resampling patients.

    Returns:
        One dict per bin: ``low``, ``high`` (smallest and largest lesion in it, voxels), ``n_lesions``, ``n_detected``, ``sensitivity``, ``ci95``.
    """
    from mednas.metrics import bootstrap_ratio_ci

    lesions = record.get("lesions") or []
    per_case = record.get("per_case") or []
    patients = record.get("patients") or [str(i) for i in range(len(per_case))]
    if not lesions or not per_case:
        return []
    # predictions.json lists lesions case after case; per_case[i]["lesions"] says how many belong to case i.
    owner = np.repeat(np.arange(len(per_case)), [int(c.get("lesions", 0)) for c in per_case])
    if owner.size != len(lesions):
        return []
    sizes = np.array([float(le["size_voxels"]) for le in lesions])
    found = np.array([bool(le["detected"]) for le in lesions])
    qs = np.unique(np.quantile(sizes, np.linspace(0, 1, n_bins + 1)))
    if qs.size < 2:
        qs = np.array([sizes.min(), sizes.max() + 1])
    edges = qs.copy()
    edges[-1] = np.inf
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (sizes >= lo) & (sizes < hi)
        n = int(inside.sum())
        if n == 0:
            continue
        k = int(found[inside].sum())
        num = np.bincount(owner[inside & found], minlength=len(per_case)).astype(float)
        den = np.bincount(owner[inside], minlength=len(per_case)).astype(float)
        est = bootstrap_ratio_ci(num, den, groups=patients, n_resamples=n_resamples, seed=seed)
        out.append(
            {
                "low": float(sizes[inside].min()),
                "high": float(sizes[inside].max()),
                "n_lesions": n,
                "n_detected": k,
                "sensitivity": k / n,
                "ci95": (float(est.low), float(est.high)),
            }
        )
    return out
