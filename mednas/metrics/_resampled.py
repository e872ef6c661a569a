"""Binary classification metrics on many bootstrap resamples at once, from a ``(B, N)`` case-weight matrix.

A patient-level resample is the same cases with integer multiplicities, so every metric of every resample is a
weighted metric of the one set of predictions: confusion counts are matrix products, and the ROC and
precision-recall curves of all resamples come from one sort of the scores and cumulative sums per resample.
This replaces ``B`` calls of scikit-learn (about 8 ms each) with a few array operations, and gives the same
numbers as computing each metric on the resampled cases (``tests/metrics`` compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ResampledCurves", "case_weights", "confusion_counts", "resampled_curves"]


def case_weights(draws: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Turn patient draws into case multiplicities.

    Args:
        draws: ``(B, G)`` patient indices drawn with replacement (:func:`~mednas.metrics.patient_resamples`).
        codes: ``(N,)`` each case's patient index.
        n_groups: ``G``.

    Returns:
        ``(B, N)`` float array: how often resample ``b`` holds case ``n`` (its patient's draw count).
    """
    rows = draws.shape[0]
    flat = (draws + n_groups * np.arange(rows)[:, None]).ravel()
    per_patient = np.bincount(flat, minlength=rows * n_groups).reshape(rows, n_groups)
    return per_patient[:, codes].astype(float)


def confusion_counts(weights: np.ndarray, truth: np.ndarray, called: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted ``(tp, fp, tn, fn)``, each ``(B,)``, for ``(N,)`` bool truth and bool decisions."""
    t = truth.astype(bool)
    c = called.astype(bool)
    cols = np.stack([t & c, ~t & c, ~t & ~c, t & ~c], axis=1).astype(float)
    out = weights @ cols
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3]


@dataclass(frozen=True)
class ResampledCurves:
    """Cumulative counts at every distinct score, from the highest down, of every resample.

    ``tp[b, 0] == fp[b, 0] == 0`` is the point above the highest score (nothing called positive), as
    scikit-learn's ``roc_curve`` starts; a score absent from a resample repeats the previous point.
    """

    tp: np.ndarray  # (B, U + 1)
    fp: np.ndarray  # (B, U + 1)

    @property
    def positives(self) -> np.ndarray:
        return self.tp[:, -1]

    @property
    def negatives(self) -> np.ndarray:
        return self.fp[:, -1]

    def _rates(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.tp / self.positives[:, None], 1.0 - self.fp / self.negatives[:, None]

    def sensitivity_at_specificity(self, min_specificity: float) -> np.ndarray:
        """Highest sensitivity whose specificity is >= the floor (as ``sensitivity_at_specificity``); ``nan``
        where a resample has one class only."""
        sens, spec = self._rates()
        best = np.where(spec >= min_specificity - 1e-12, sens, -np.inf).max(axis=1)
        return np.where(self._both(), best, np.nan)

    def specificity_at_sensitivity(self, min_sensitivity: float) -> np.ndarray:
        """Highest specificity whose sensitivity is >= the floor; ``nan`` where a resample has one class only."""
        sens, spec = self._rates()
        best = np.where(sens >= min_sensitivity - 1e-12, spec, -np.inf).max(axis=1)
        return np.where(self._both(), best, np.nan)

    def auroc(self) -> np.ndarray:
        """Trapezoidal area under each ROC curve (ties count one half, as ``roc_auc_score``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = self.tp / self.positives[:, None]
            fpr = self.fp / self.negatives[:, None]
            area = (np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2).sum(axis=1)
        return np.where(self._both(), area, np.nan)

    def average_precision(self) -> np.ndarray:
        """``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores (as ``average_precision_score``)."""
        called = self.tp + self.fp
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(called > 0, self.tp / np.where(called > 0, called, 1.0), 0.0)
            step = np.diff(self.tp, axis=1) / self.positives[:, None]
            ap = (step * precision[:, 1:]).sum(axis=1)
        return np.where(self.positives > 0, ap, np.nan)

    def _both(self) -> np.ndarray:
        return (self.positives > 0) & (self.negatives > 0)


def resampled_curves(weights: np.ndarray, truth: np.ndarray, score: np.ndarray) -> ResampledCurves:
    """Cumulative weighted true and false positives at each distinct score of ``score``, highest first.

    Args:
        weights: ``(B, N)`` case multiplicities.
        truth: ``(N,)`` bool finding labels.
        score: ``(N,)`` finding scores.
    """
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1]) if s.size else np.zeros(0, dtype=int)
    w = weights[:, order]
    t = truth[order].astype(float)
    pos = np.add.reduceat(w * t, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - t), starts, axis=1)
    zero = np.zeros((weights.shape[0], 1))
    return ResampledCurves(np.concatenate([zero, np.cumsum(pos, axis=1)], axis=1),
                           np.concatenate([zero, np.cumsum(neg, axis=1)], axis=1))
