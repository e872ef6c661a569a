"""Post-hoc temperature scaling and the warnings an operating point deserves.

A network trained with a re-weighted loss or re-balanced batches gives probabilities that are not frequencies;
one scalar temperature fitted on validation logits (Guo et al., 2017) repairs most of that without changing the
ranking of cases. Pure functions of predictions and labels, like the rest of :mod:`mednas.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "EXTREME_THRESHOLD",
    "MAX_ECE",
    "MIN_DECIDING_CASES",
    "apply_temperature",
    "calibration_record",
    "fit_temperature",
    "logits_from_probabilities",
    "negative_log_likelihood",
    "operating_point_warnings",
]

#: A threshold below the first or above the second value is extreme (the issue-14 PneumoniaMNIST run chose 0.025).
EXTREME_THRESHOLD = (0.05, 0.95)
#: Expected calibration error above this after calibration is warned about.
MAX_ECE = 0.1
#: Fewer validation cases than this of the class whose rate the operating rule constrains are warned about.
MIN_DECIDING_CASES = 100
#: How much temperature scaling may raise the validation ECE before it is warned about (binning noise).
ECE_RISE_TOLERANCE = 0.01

_EPS = 1e-12
_T_BOUNDS = (0.05, 20.0)


def logits_from_probabilities(probs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Return ``log(p)``: logits up to a per-case constant, which softmax ignores.

    ``softmax(log(p) / T) == softmax(z / T)`` for the logits ``z`` that gave ``p = softmax(z)``, so a temperature
    can be fitted and applied from stored probabilities alone (probabilities that rounded to 0 are clipped).

    Args:
        probs: ``(N, C)`` class probabilities.
    """
    p = np.asarray(probs, dtype=np.float64)
    return np.log(np.clip(p, _EPS, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(logits: np.ndarray | Sequence[Sequence[float]], temperature: float) -> np.ndarray:
    """Return ``softmax(logits / temperature)``, ``(N, C)``.

    Example:
        >>> apply_temperature([[0.0, 2.0]], 2.0).round(3).tolist()
        [[0.269, 0.731]]
    """
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return _softmax(np.asarray(logits, dtype=np.float64) / float(temperature))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean multi-class negative log-likelihood of integer ``labels`` ``(N,)`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    y = np.asarray(labels, dtype=np.int64)
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(
    logits: np.ndarray | Sequence[Sequence[float]], labels: np.ndarray | Sequence[int]
) -> float:
    """Fit the temperature ``T > 0`` that minimises the negative log-likelihood of ``labels``.

    A bounded scalar minimisation over ``log T`` (``T`` in [0.05, 20]): deterministic, milliseconds for
    thousands of cases, and ranking-preserving (every probability is a monotone function of ``z / T``).

    Args:
        logits: ``(N, C)`` logits (or :func:`logits_from_probabilities` of stored probabilities).
        labels: ``(N,)`` integer class labels.

    Returns:
        The temperature; 1.0 when there are no cases or only one class is present (nothing to fit against).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 2000)
        >>> z = np.stack([np.zeros(2000), rng.logistic(size=2000) + np.where(y == 1, 1.0, -1.0)], axis=1)
        >>> round(fit_temperature(3 * z, y), 1)  # logits made 3x overconfident
        3.0
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"logits must be (N, C) with one label per row, got {z.shape} and {y.shape}")
    if len(y) == 0 or len(np.unique(y)) < 2 or not np.isfinite(z).all():
        return 1.0
    lo, hi = (math.log(b) for b in _T_BOUNDS)
    res = minimize_scalar(
        lambda s: negative_log_likelihood(z, y, math.exp(s)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(math.exp(res.x))
    # Never worse than no scaling (a flat likelihood can leave the optimiser anywhere).
    return t if negative_log_likelihood(z, y, t) <= negative_log_likelihood(z, y, 1.0) else 1.0


def calibration_record(
    probs: np.ndarray, labels: np.ndarray, finding_indices: Sequence[int], *, n_bins: int = 10
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit a temperature on validation probabilities; return its record and the calibrated probabilities.

    Args:
        probs: ``(N, C)`` validation probabilities (softmax of the logits).
        labels: ``(N,)`` integer labels.
        finding_indices: Finding classes (ECE is that of the finding score, as everywhere in mednas).
        n_bins: ECE bins.

    Returns:
        ``({"temperature", "ece_before", "ece_after", "nll_before", "nll_after", "n_cases", "fitted_on",
        "seconds"}, calibrated (N, C) probabilities)``.
    """
    from mednas.metrics._classification import expected_calibration_error, finding_score

    t0 = time.perf_counter()
    z = logits_from_probabilities(probs)
    y = np.asarray(labels, dtype=np.int64)
    t = fit_temperature(z, y)
    calibrated = apply_temperature(z, t)
    truth = np.isin(y, list(finding_indices)).astype(int)

    def ece(p: np.ndarray) -> float | None:
        if len(truth) == 0:
            return None
        return expected_calibration_error(
            truth, np.clip(finding_score(p, positive=list(finding_indices)), 0.0, 1.0), n_bins=n_bins
        )

    record = {
        "temperature": t,
        "ece_before": ece(np.asarray(probs, dtype=np.float64)),
        "ece_after": ece(calibrated),
        "nll_before": negative_log_likelihood(z, y, 1.0) if len(y) else None,
        "nll_after": negative_log_likelihood(z, y, t) if len(y) else None,
        "n_cases": int(len(y)),
        "fitted_on": "validation",
        "method": "temperature scaling (one scalar, minimum validation NLL)",
        "seconds": time.perf_counter() - t0,
    }
    return record, calibrated


def operating_point_warnings(
    op: dict[str, Any] | None,
    *,
    ece_after: float | None,
    truth: np.ndarray | Sequence[int],
    temperature: float | None = None,
    ece_before: float | None = None,
) -> list[str]:
    """Return plain-language warnings about a classification operating point chosen on validation.

    Three conditions are checked: an extreme threshold (below 0.05 or above 0.95), an expected calibration
    error above 0.1 after calibration, and fewer than 100 validation cases of the class that decided the
    threshold (the negatives for a specificity floor, the positives for a sensitivity floor, the smaller class
    otherwise).

    Args:
        op: The operating point record (``threshold``, ``rule``, ...), or None.
        ece_after: Validation ECE of the calibrated probabilities.
        truth: ``(N,)`` validation finding indicators (1 = finding).
        temperature: The fitted temperature; one at the edge of its range (0.05 or 20) is warned about.
        ece_before: Validation ECE before calibration; an ECE that rose (the fit minimises the log-likelihood,
            and on a few cases the two disagree) is warned about.
    """
    out: list[str] = []
    t = np.asarray(truth).astype(int)
    thr = None if not op else op.get("threshold")
    rule = str((op or {}).get("rule") or "")
    if (
        thr is not None
        and math.isfinite(float(thr))
        and not EXTREME_THRESHOLD[0] <= float(thr) <= EXTREME_THRESHOLD[1]
    ):
        out.append(
            f"extreme threshold {float(thr):.4g} (outside {EXTREME_THRESHOLD[0]}-{EXTREME_THRESHOLD[1]}): the decision "
            "rests on the tail of the probability distribution, where a small shift in the population moves "
            "sensitivity and specificity a lot"
        )
    if ece_after is not None and math.isfinite(ece_after) and ece_after > MAX_ECE:
        out.append(
            f"validation ECE {ece_after:.3f} after calibration exceeds {MAX_ECE}: probabilities are not reliable "
            "as risks"
        )
    # A binned ECE moves by a few thousandths between two fits of the same model: only a real rise is a warning.
    if ece_before is not None and ece_after is not None and ece_after > ece_before + ECE_RISE_TOLERANCE:
        out.append(
            f"temperature scaling raised the validation ECE from {ece_before:.3f} to {ece_after:.3f} (it minimises "
            f"the log-likelihood over {len(t)} cases): too few validation cases to calibrate reliably"
        )
    if temperature is not None and not _T_BOUNDS[0] * 1.01 < temperature < _T_BOUNDS[1] * 0.99:
        out.append(
            f"the fitted temperature {temperature:.3g} is at the edge of its range ({_T_BOUNDS[0]}-{_T_BOUNDS[1]:g}): "
            "on validation the scores carry little probability information (near-constant calibrated "
            "probabilities), so the operating point is fragile"
        )
    if op is not None and len(t):
        n_pos, n_neg = int(t.sum()), int(len(t) - t.sum())
        if rule.startswith("sensitivity_at_specificity"):
            n, who = n_neg, "cases without the finding (the specificity floor)"
        elif rule.startswith("specificity_at_sensitivity"):
            n, who = n_pos, "cases with the finding (the sensitivity floor)"
        else:
            n, who = min(n_pos, n_neg), "cases of the smaller class"
        if n < MIN_DECIDING_CASES:
            out.append(
                f"only {n} validation {who} decided the threshold (fewer than {MIN_DECIDING_CASES}): the rate it "
                "promises is uncertain"
            )
    return out
