"""Percentile bootstrap confidence intervals that resample patients, not images.

Images of one patient are correlated; resampling them one by one pretends there is more independent evidence
than there is and gives intervals that are too narrow. Each resample here draws patients with replacement and
takes all of a drawn patient's cases along (a cluster bootstrap). ``scipy.stats.bootstrap`` has no notion of
groups, so the drawing is done here; the interval is the plain percentile interval.

Every function draws the same patients for the same ``seed`` and number of patients, so intervals are
reproducible and :func:`bootstrap_ci` and the fast paths agree on the same data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "patient_resample_indices",
    "patient_resamples",
]

Seed = int | np.random.SeedSequence

#: Bound on the (resamples x patients) multiplicity matrix the fast paths hold at once.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the full data and its bootstrap confidence interval.

    Attributes:
        value: The metric on all cases (not a bootstrap mean).
        low: Lower percentile bound, ``alpha / 2``; ``nan`` if no resample was valid.
        high: Upper percentile bound, ``1 - alpha / 2``.
        n_resamples: Resamples the interval was computed from (the valid ones).
        n_skipped: Resamples skipped because the metric was undefined (``nan``) on them, e.g. no positive
            patient was drawn. Many skips bias the interval towards resamples that contain both classes.
        confidence: ``1 - alpha``.
    """

    value: float
    low: float
    high: float
    n_resamples: int
    n_skipped: int = 0
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (``mednas.io`` writes non-finite floats as null)."""
        return asdict(self)


def patient_resamples(
    groups: np.ndarray | Sequence[Any], *, n_resamples: int = 1000, seed: Seed = 0
) -> np.ndarray:
    """Draw patients with replacement: the draws every bootstrap function here uses.

    Args:
        groups: ``(N,)`` patient identifier of each case (any sortable values).
        n_resamples: Number of resamples ``B``.
        seed: Seed of the ``numpy.random.Generator``.

    Returns:
        ``(B, G)`` int array of patient indices into ``numpy.unique(groups)``, ``G`` patients per resample.
    """
    _, n_groups = _group_codes(groups)
    return _draw(n_groups, n_resamples, seed)


def patient_resample_indices(
    groups: np.ndarray | Sequence[Any], *, n_resamples: int = 1000, seed: Seed = 0
) -> Iterator[np.ndarray]:
    """Case indices of each resample: every case of each drawn patient, patient by patient.

    These are the resamples :func:`bootstrap_ci` scores (the draws of :func:`patient_resamples`), for callers that
    compute more than one number per resample, such as a curve with a pointwise band.

    Args:
        groups: ``(N,)`` patient identifier of each case (any sortable values).
        n_resamples: Number of resamples ``B``.
        seed: Seed of the ``numpy.random.Generator``.

    Returns:
        An iterator of ``B`` int arrays of case indices into ``groups`` (a patient's cases in their given order).

    Raises:
        ValueError: If ``groups`` is empty or not one-dimensional.

    Example:
        >>> [idx.tolist() for idx in patient_resample_indices(["a", "b", "a"], n_resamples=2, seed=0)]
        [[1, 1], [1, 0, 2]]
    """
    codes, n_groups = _group_codes(groups)
    return _resample_indices(codes, n_groups, _draw(n_groups, n_resamples, seed))


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray | Sequence[Any],
    groups: np.ndarray | Sequence[Any],
    n_resamples: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Compute any metric with a patient-level percentile bootstrap interval.

    Args:
        metric_fn: ``metric_fn(*arrays) -> float``; called once on all cases and once per resample with every
            array indexed by the same resampled cases (all cases of each drawn patient, in patient order).
        *arrays: Per-case arrays, cases along axis 0 (e.g. ``y_true`` ``(N,)`` and ``y_score`` ``(N, C)``).
        groups: ``(N,)`` patient identifier of each case.
        n_resamples: Number of resamples.
        seed: Seed; the same seed gives the same interval.
        alpha: ``1 - confidence``; 0.05 gives a 95% interval.

    Returns:
        An :class:`Estimate`. Resamples on which ``metric_fn`` returns ``nan`` are skipped and counted (their
        warnings are silenced); if the metric is ``nan`` on all cases the interval is ``nan`` too.

    Raises:
        ValueError: If arrays are empty or disagree in length with ``groups``, or arguments are out of range.

    Example:
        >>> from mednas.metrics import auroc
        >>> y, s, pid = [0, 1, 0, 1, 1, 0], [.1, .8, .3, .6, .9, .4], ["a", "a", "b", "b", "c", "c"]
        >>> est = bootstrap_ci(auroc, y, s, groups=pid, n_resamples=200, seed=0)
        >>> est.value
        1.0
    """
    _check_args(n_resamples, alpha)
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one per-case array")
    data = [np.asarray(a) for a in arrays]
    codes, n_groups = _group_codes(groups)
    for a in data:
        if a.ndim == 0 or a.shape[0] != codes.shape[0]:
            raise ValueError(f"every array needs one row per case ({codes.shape[0]}), got shape {a.shape}")
    value = float(metric_fn(*data))
    if math.isnan(value):
        return Estimate(value, math.nan, math.nan, 0, 0, 1 - alpha)
    stats = np.empty(n_resamples)
    with warnings.catch_warnings():
        # An undefined resample (one class drawn) is expected and counted; its warning is noise.
        warnings.simplefilter("ignore")
        for b, idx in enumerate(_resample_indices(codes, n_groups, _draw(n_groups, n_resamples, seed))):
            stats[b] = metric_fn(*(a[idx] for a in data))
    return _estimate(value, stats, alpha)


def bootstrap_ratio_ci(
    numerators: np.ndarray | Sequence[float],
    denominators: np.ndarray | Sequence[float],
    *,
    groups: np.ndarray | Sequence[Any],
    n_resamples: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Bootstrap a pooled ratio ``sum(numerators) / sum(denominators)`` fast, from per-patient sums.

    Pooled lesion sensitivity is ``ratio(detected per case, lesions per case)``; false positives per case is
    ``ratio(false positives per case, 1)``. Each resample is a weighted sum of per-patient totals, so no
    per-case work is repeated. A resample whose denominator is 0 is skipped.

    Args:
        numerators: ``(N,)`` per-case numerators.
        denominators: ``(N,)`` per-case denominators (>= 0).
        groups: ``(N,)`` patient identifier of each case.
        n_resamples: Number of resamples.
        seed: Seed; draws equal those of :func:`bootstrap_ci` for the same seed and patients.
        alpha: ``1 - confidence``.

    Returns:
        An :class:`Estimate`; its value is ``nan`` if the denominators sum to 0.
    """
    _check_args(n_resamples, alpha)
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    codes, n_groups = _group_codes(groups)
    if num.shape != codes.shape or den.shape != codes.shape:
        raise ValueError(
            f"numerators {num.shape}, denominators {den.shape} and groups {codes.shape} must match"
        )
    if not (np.isfinite(num).all() and np.isfinite(den).all()) or (den < 0).any():
        raise ValueError("numerators and denominators must be finite and denominators >= 0")
    total = den.sum()
    value = float(num.sum() / total) if total > 0 else math.nan
    if math.isnan(value):
        return Estimate(value, math.nan, math.nan, 0, 0, 1 - alpha)
    num_g = np.bincount(codes, weights=num, minlength=n_groups)
    den_g = np.bincount(codes, weights=den, minlength=n_groups)
    draws = _draw(n_groups, n_resamples, seed)
    stats = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // n_groups)
    for lo in range(0, n_resamples, chunk):
        block = draws[lo : lo + chunk]
        rows = block.shape[0]
        # weights[b, g] = how often resample b drew patient g
        flat = (block + n_groups * np.arange(rows)[:, None]).ravel()
        weights = np.bincount(flat, minlength=rows * n_groups).reshape(rows, n_groups).astype(float)
        d = weights @ den_g
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[lo : lo + rows] = np.where(d > 0, (weights @ num_g) / d, math.nan)
    return _estimate(value, stats, alpha)


def bootstrap_mean_ci(
    values: np.ndarray | Sequence[float],
    *,
    groups: np.ndarray | Sequence[Any],
    n_resamples: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Bootstrap the mean of a per-case metric (e.g. Dice per case) over patients, fast.

    Every case weighs the same in the mean; patients are the resampling unit. ``nan`` cases (e.g. lesion
    sensitivity of a case without lesions) are left out of the mean, here and in every resample.

    Args:
        values: ``(N,)`` per-case values.
        groups: ``(N,)`` patient identifier of each case.
        n_resamples: Number of resamples.
        seed: Seed; the draws equal those of :func:`bootstrap_ci`.
        alpha: ``1 - confidence``.

    Returns:
        An :class:`Estimate`; ``value`` is the mean of the non-``nan`` cases.

    Example:
        >>> est = bootstrap_mean_ci([0.8, 0.9, 0.7, 0.6], groups=[1, 1, 2, 2], n_resamples=100)
        >>> round(est.value, 2)
        0.75
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"values must be (N,), got shape {v.shape}")
    if np.isinf(v).any():
        raise ValueError("values must not be infinite")
    valid = ~np.isnan(v)
    return bootstrap_ratio_ci(
        np.where(valid, v, 0.0),
        valid.astype(float),
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
    )


# ---------------------------------------------------------------------------------------------- helpers


def _group_codes(groups: np.ndarray | Sequence[Any]) -> tuple[np.ndarray, int]:
    """Return ``(codes, G)``: each case's index into the sorted unique patients."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"groups must be a non-empty (N,) array of patient identifiers, got shape {g.shape}")
    uniques, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1), int(uniques.size)


def _draw(n_groups: int, n_resamples: int, seed: Seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_resamples, n_groups))


def _resample_indices(codes: np.ndarray, n_groups: int, draws: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the case indices of each row of ``draws`` (patient indices), patient by patient."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for drawn in draws:
        yield order[_case_positions(drawn, starts, counts)]


def _case_positions(drawn: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Positions (into cases sorted by patient) of every case of every drawn patient, patient by patient."""
    lengths = counts[drawn]
    ends = np.cumsum(lengths)
    # position k of the output belongs to drawn patient j: starts[j] + (k - first output slot of j)
    return np.repeat(starts[drawn] - (ends - lengths), lengths) + np.arange(ends[-1])


def _estimate(value: float, stats: np.ndarray, alpha: float) -> Estimate:
    ok = stats[~np.isnan(stats)]
    skipped = int(stats.size - ok.size)
    if not ok.size:
        return Estimate(value, math.nan, math.nan, 0, skipped, 1 - alpha)
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, float(low), float(high), int(ok.size), skipped, 1 - alpha)


def _check_args(n_resamples: int, alpha: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
