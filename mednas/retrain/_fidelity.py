"""How far the proxy ranking predicts the full-fidelity ranking: Kendall tau, Spearman rho, top-1 regret.

Seed noise bounds any such agreement: in a pilot here, two full-resolution trainings of the same 11 candidates
with different seeds agreed only at Kendall tau 0.73-0.84 (DESIGN.md, principle 7). Fidelity is reported against
that ceiling, and candidates that never started learning are counted and left out of the rank statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["LOW_TAU", "SEED_NOISE_TAU", "proxy_fidelity", "rank_agreement", "top1_regret"]

#: Kendall tau between two full trainings of the same candidates with different seeds (pilot, 11 candidates).
SEED_NOISE_TAU: tuple[float, float] = (0.73, 0.84)
#: Below this Kendall tau the proxy ranking is reported as unreliable, with advice.
LOW_TAU = 0.5
#: Fewer candidates than this make a rank correlation meaningless.
MIN_CANDIDATES = 3

CEILING_NOTE = (
    "seed noise alone limits Kendall tau to about {lo:.2f}-{hi:.2f} (two full trainings of the same 11 candidates "
    "with different seeds), so a proxy tau near that range is as good as a ranking can be"
)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None, float | None, str | None]:
    """Return Kendall tau (tau-b, ties allowed), its p-value, Spearman rho and a reason when undefined.

    Args:
        a: Scores of n candidates under one ranking (e.g. the proxy).
        b: Scores of the same candidates under the other (e.g. full fidelity), same order.

    Returns:
        ``(tau, p_value, rho, reason)``; the first three are None, and ``reason`` says why, when fewer than three
        candidates are given or one side's scores are all tied.

    Example:
        >>> rank_agreement([0.9, 0.8, 0.7], [0.85, 0.8, 0.6])[0]
        1.0
    """
    from scipy import stats

    n = len(a)
    if n != len(b):
        raise ValueError(f"{n} scores against {len(b)}")
    if n < MIN_CANDIDATES:
        return None, None, None, f"a rank correlation needs at least {MIN_CANDIDATES} candidates that learned, got {n}"
    if len(set(a)) == 1 or len(set(b)) == 1:
        side = "proxy" if len(set(a)) == 1 else "full-fidelity"
        return None, None, None, f"all {side} scores are tied, so there is no ranking to compare"
    tau = stats.kendalltau(a, b)
    rho = stats.spearmanr(a, b)
    return float(tau.statistic), float(tau.pvalue), float(rho.statistic), None


def top1_regret(full: Sequence[float], first: int, *, maximize: bool = True) -> float:
    """Return how much worse, at full fidelity, the proxy's first choice is than the best candidate (>= 0).

    Args:
        full: Full-fidelity scores.
        first: Index of the proxy's first choice in ``full``.
        maximize: Higher scores are better.

    Example:
        >>> round(top1_regret([0.7, 0.9, 0.8], 0), 3)
        0.2
    """
    best = max(full) if maximize else min(full)
    return float(best - full[first]) if maximize else float(full[first] - best)


def proxy_fidelity(
    trials: Sequence[int],
    proxy: Sequence[float | None],
    full: Sequence[float | None],
    learned: Sequence[bool],
    *,
    maximize: bool = True,
) -> dict[str, Any]:
    """Compare the proxy and full-fidelity rankings of the retrained candidates.

    Args:
        trials: Trial numbers, in the search's order (the proxy's first choice first; candidates that never
            learned on the proxy already last).
        proxy: Proxy objective of each (validation).
        full: Full-fidelity validation objective of each (None where retraining failed).
        learned: False for a candidate that never started learning on the proxy or at full fidelity: such a
            candidate is counted (``n_not_learning``) and left out of tau and rho, not ranked.
        maximize: The objective's direction.

    Returns:
        The ``proxy_fidelity`` record of ``summary.json``: ``kendall_tau``, ``kendall_p``, ``spearman``,
        ``top1_regret`` (None with a ``reason`` when undefined), ``n`` (candidates in tau), ``n_candidates``,
        ``n_not_learning``, ``not_learning`` (trial numbers), ``top1_trial`` (proxy's choice),
        ``best_full_trial``, ``ceiling`` (the seed-noise range and what it means), ``note`` (for fewer than 6
        candidates: how coarse tau is) and ``warning`` (None, or the low-fidelity warning with advice).
    """
    if not (len(trials) == len(proxy) == len(full) == len(learned)):
        raise ValueError("trials, proxy, full and learned must have the same length")
    done = [i for i in range(len(trials)) if _finite(full[i])]
    not_learning = [int(trials[i]) for i in done if not learned[i]]
    ranked = [i for i in done if learned[i] and _finite(proxy[i])]
    sign = 1.0 if maximize else -1.0
    tau, p, rho, reason = rank_agreement([sign * float(proxy[i]) for i in ranked],  # type: ignore[arg-type]
                                         [sign * float(full[i]) for i in ranked])  # type: ignore[arg-type]
    record: dict[str, Any] = {
        "kendall_tau": tau,
        "kendall_p": p,
        "spearman": rho,
        "top1_regret": None,
        "n": len(ranked),
        "n_candidates": len(trials),
        "n_retrained": len(done),
        "n_not_learning": len(not_learning),
        "not_learning": not_learning,
        "top1_trial": None,
        "best_full_trial": None,
        "ceiling": {"kendall_tau": list(SEED_NOISE_TAU), "note": CEILING_NOTE.format(lo=SEED_NOISE_TAU[0], hi=SEED_NOISE_TAU[1])},
        "reason": reason,
        "warning": None,
    }
    if done:
        values = [float(full[i]) for i in done]  # type: ignore[arg-type]
        first = 0  # `done` keeps the search's order: its first entry is the proxy's first choice that retrained
        best = max(range(len(done)), key=lambda j: sign * values[j])
        record["top1_trial"] = int(trials[done[first]])
        record["best_full_trial"] = int(trials[done[best]])
        if len(done) >= 2:
            record["top1_regret"] = top1_regret(values, first, maximize=maximize)
        elif reason is None:
            record["reason"] = "regret needs at least 2 retrained candidates"
    if tau is not None and len(ranked) < 6:
        record["note"] = coarse_note(len(ranked))
    if tau is not None and tau < LOW_TAU:
        record["warning"] = low_tau_warning(tau, len(ranked))
    return record


def coarse_note(n: int) -> str:
    """Return how coarse Kendall tau is over ``n`` candidates (one swapped pair moves it by ``4 / (n (n - 1))``)."""
    return (f"tau over {n} candidates moves in steps of {4 / (n * (n - 1)):.2f} (one swapped pair): retrain more "
            "candidates (--top-k) for a figure that can tell a good proxy from a poor one")


def low_tau_warning(tau: float, n: int) -> str:
    """Return the warning (with advice) for a Kendall tau below :data:`LOW_TAU`."""
    lo, hi = SEED_NOISE_TAU
    return (
        f"low proxy fidelity: Kendall tau {tau:.2f} over {n} retrained candidates (below {LOW_TAU}; seed noise alone "
        f"limits tau to about {lo:.2f}-{hi:.2f}). The proxy ranking is a weak guide to full-fidelity performance: "
        "give the proxy more epochs (proxy.epochs) or a larger input (proxy.scale / proxy.shape), measure which "
        "proxy settings rank like full training with `mednas calibrate-proxy TASK.yaml`, and retrain more "
        "candidates (--top-k) before trusting the winner."
        + (f" With {n} candidates one swapped pair moves tau by {4 / (n * (n - 1)):.2f}, so this figure is coarse." if n < 6 else "")
    )
