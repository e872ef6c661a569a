"""How far the proxy ranking predicts the full-fidelity ranking: Kendall tau, Spearman rho, top-1 regret.

Seed noise bounds any such agreement: two full trainings of the same candidates with different seeds do not rank
them identically. That ceiling is measured on the run itself (``mednas retrain --seeds 2``) and fidelity is read
against it; when it was not measured, every output says so rather than quoting a figure from another experiment.
Candidates that never started learning are counted and left out of the rank statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "LOW_TAU",
    "SEED_NOISE_TAU",
    "bootstrap_tau_interval",
    "ceiling_note",
    "proxy_fidelity",
    "rank_agreement",
    "seed_ceiling",
    "top1_regret",
]

#: Kendall tau between two full trainings of 11 candidates with different seeds in one early pilot of this project.
#: Kept for reference only: no output quotes it (a figure from another experiment says nothing about this run).
SEED_NOISE_TAU: tuple[float, float] = (0.73, 0.84)
#: Below this Kendall tau the proxy ranking is reported as unreliable, with advice.
LOW_TAU = 0.5
#: Fewer candidates than this make a rank correlation meaningless.
MIN_CANDIDATES = 3
#: Bootstrap intervals over candidates need at least this many (fewer give intervals that say nothing).
MIN_BOOTSTRAP = 4
#: Resamples for the percentile bootstrap over candidates.
N_BOOTSTRAP = 1000

#: What outputs say when the run did not measure its own seed-noise ceiling.
CEILING_NOT_MEASURED = (
    "the seed-noise ceiling (how well full training agrees with itself across seeds, the most any proxy ranking "
    "can reach) was not measured on this run; `mednas retrain RUN_DIR --seeds 2` measures it"
)


def ceiling_note(ceiling: float | None) -> str:
    """Return the one-line reading of the seed-noise ceiling: the run's own figure, or that it was not measured."""
    if ceiling is None:
        return CEILING_NOT_MEASURED
    return (
        f"seed-noise ceiling measured on this run: full training agrees with itself across seeds at Kendall tau "
        f"{ceiling:.2f}, so a proxy tau near it is as good as a ranking of these candidates can be"
    )


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))


def rank_agreement(
    a: Sequence[float], b: Sequence[float]
) -> tuple[float | None, float | None, float | None, str | None]:
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
        return (
            None,
            None,
            None,
            f"a rank correlation needs at least {MIN_CANDIDATES} candidates that learned, got {n}",
        )
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


def bootstrap_tau_interval(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """Return the 95% percentile bootstrap interval of Kendall tau, resampling candidates with replacement.

    Resamples in which one side is all tied (tau undefined) are skipped. Returns None for fewer than
    :data:`MIN_BOOTSTRAP` candidates or when fewer than half of the resamples give a tau.

    Example:
        >>> lo, hi = bootstrap_tau_interval([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])
        >>> -1.0 <= lo <= 0.6 <= hi <= 1.0
        True
    """
    import numpy as np
    from scipy import stats

    n = len(a)
    if n < MIN_BOOTSTRAP:
        return None
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        xa, yb = x[idx], y[idx]
        if np.ptp(xa) == 0 or np.ptp(yb) == 0:
            continue
        t = stats.kendalltau(xa, yb).statistic
        if math.isfinite(t):
            taus.append(float(t))
    if len(taus) < n_resamples // 2:
        return None
    return [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))]


def seed_ceiling(
    by_seed: Sequence[Sequence[float | None]], *, maximize: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Agreement between full-fidelity trainings of the same candidates with different seeds.

    No proxy can rank candidates more consistently than full training agrees with itself, so this is the
    ceiling a proxy's Kendall tau is read against.

    Args:
        by_seed: One row per seed, each with one score per candidate (None where that training failed).
        maximize: The objective's direction (tau does not depend on it; kept for symmetry).
        seed: Seeds the bootstrap.

    Returns:
        ``kendall_tau`` (mean over seed pairs; None with ``reason`` for fewer than 2 seeds or 3 candidates),
        ``pairs`` (one ``{"seeds": [i, j], "kendall_tau", "n"}`` per pair) and ``interval`` (bootstrap over
        candidates of the first pair).

    Example:
        >>> seed_ceiling([[0.9, 0.8, 0.7, 0.6], [0.8, 0.9, 0.7, 0.6]])["kendall_tau"]
        0.6666666666666669
    """
    del maximize
    pairs = []
    interval = None
    for i in range(len(by_seed)):
        for j in range(i + 1, len(by_seed)):
            keep = [c for c in range(len(by_seed[i])) if _finite(by_seed[i][c]) and _finite(by_seed[j][c])]
            a = [float(by_seed[i][c]) for c in keep]  # type: ignore[arg-type]
            b = [float(by_seed[j][c]) for c in keep]  # type: ignore[arg-type]
            tau, _, _, reason = rank_agreement(a, b)
            if (
                reason and "tied" in reason
            ):  # rank_agreement names its sides proxy/full; here both are full seeds
                reason = "one seed's full-fidelity scores are all tied, so there is no ranking to compare"
            pairs.append({"seeds": [i, j], "kendall_tau": tau, "n": len(keep), "reason": reason})
            if interval is None and tau is not None:
                interval = bootstrap_tau_interval(a, b, seed=seed)
    scored = [p["kendall_tau"] for p in pairs if p["kendall_tau"] is not None]
    reason = None
    if len(by_seed) < 2:
        reason = "one full-fidelity seed per candidate: retrain with --seeds 2 or more to measure the seed-noise ceiling"
    elif not scored:
        reason = next((p["reason"] for p in pairs if p["reason"]), "no seed pair could be compared")
    return {
        "kendall_tau": (sum(scored) / len(scored)) if scored else None,
        "pairs": pairs,
        "interval": interval,
        "reason": reason,
    }


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None for one value) and count of the finite values (None when none)."""
    done = [float(v) for v in values if _finite(v)]  # type: ignore[arg-type]
    if not done:
        return None, None, 0
    mean = sum(done) / len(done)
    std = math.sqrt(sum((v - mean) ** 2 for v in done) / (len(done) - 1)) if len(done) > 1 else None
    return mean, std, len(done)


def proxy_fidelity(
    trials: Sequence[int],
    proxy: Sequence[float | None],
    full: Sequence[float | None] | None,
    learned: Sequence[bool],
    *,
    maximize: bool = True,
    full_seeds: Sequence[Sequence[float | None]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the proxy and full-fidelity rankings of the retrained candidates, against the seed-noise ceiling.

    Args:
        trials: Trial numbers, in the search's order (the proxy's first choice first; candidates that never
            learned on the proxy already last).
        proxy: Proxy objective of each (validation; the mean over proxy seeds where the search re-evaluated).
        full: Full-fidelity validation objective of each (None where retraining failed). Ignored when
            ``full_seeds`` is given: the seed mean is used.
        learned: False for a candidate that never started learning on the proxy or at full fidelity: such a
            candidate is counted (``n_not_learning``) and left out of tau, rho and the ceiling, not ranked.
        maximize: The objective's direction.
        full_seeds: Per candidate, its full-fidelity validation objective for each seed (None where that
            training failed). With two or more seeds the record gains the seed-noise ceiling.
        seed: Seeds the bootstrap intervals over candidates.

    Returns:
        The ``proxy_fidelity`` record of ``summary.json``: ``kendall_tau`` (proxy against the full seed mean),
        ``kendall_tau_interval`` (bootstrap over candidates), ``kendall_p``, ``spearman``, ``seeds``,
        ``seed_ceiling_tau`` (agreement between full-fidelity seeds; None with ``seed_ceiling_reason`` for one
        seed), ``seed_ceiling_interval``, ``seed_ceiling_pairs``, ``tau_over_ceiling``, ``top1_regret``,
        ``seed_sd`` (mean over candidates of the standard deviation across seeds), ``regret_in_seed_sd``,
        ``regret_within_seed_noise``, ``top3_contains_best`` (with ``top3_note`` when it holds trivially),
        ``full_mean``/``full_sd`` per candidate, ``n`` (candidates in tau), ``n_candidates``, ``n_retrained``,
        ``n_not_learning``, ``not_learning`` (trial numbers), ``top1_trial`` (proxy's choice),
        ``best_full_trial``, ``ceiling`` (the pilot's seed-noise range), ``note`` (for fewer than 6 candidates:
        how coarse tau is) and ``warning`` (None, or the low-fidelity warning with advice).
    """
    n_c = len(trials)
    full, sds, n_seeds = _full_scores(n_c, full, full_seeds)
    if not (n_c == len(proxy) == len(full) == len(learned)):
        raise ValueError("trials, proxy, full and learned must have the same length")
    done = [i for i in range(n_c) if _finite(full[i])]
    not_learning = [int(trials[i]) for i in done if not learned[i]]
    ranked = [i for i in done if learned[i] and _finite(proxy[i])]
    a, b = _oriented(proxy, ranked, maximize), _oriented(full, ranked, maximize)
    tau, p, rho, reason = rank_agreement(a, b)
    interval = bootstrap_tau_interval(a, b, seed=seed) if tau is not None else None
    ceiling = _ceiling_of(full_seeds, ranked, n_seeds, maximize=maximize, seed=seed)
    spread = [sds[i] for i in ranked if sds[i] is not None]
    record: dict[str, Any] = {
        "kendall_tau": tau,
        "kendall_tau_interval": interval,
        "kendall_p": p,
        "spearman": rho,
        "seeds": n_seeds,
        **_ceiling_fields(ceiling, tau),
        "top1_regret": None,
        "seed_sd": (sum(spread) / len(spread)) if spread else None,
        "regret_in_seed_sd": None,
        "regret_within_seed_noise": None,
        "top3_contains_best": None,
        **_candidate_fields(trials, full, sds, done, ranked, not_learning),
        "top1_trial": None,
        "best_full_trial": None,
        "ceiling": _ceiling_reading(ceiling["kendall_tau"]),
        "reason": reason,
        "warning": None,
    }
    # Regret and the top-3 hit are read over the candidates that learned (a non-learner is no choice to regret),
    # falling back to all retrained candidates when none learned.
    pool = [i for i in done if learned[i]] or done
    if pool:
        _add_choice(record, [int(trials[i]) for i in pool], [float(full[i]) for i in pool], maximize=maximize)  # type: ignore[arg-type]
    if tau is not None:
        _add_notes(record, tau, len(ranked), n_seeds)
    return record


def _oriented(scores: Sequence[float | None], keep: list[int], maximize: bool) -> list[float]:
    """The scores at ``keep``, negated for an objective to minimise (so higher ranks first either way)."""
    sign = 1.0 if maximize else -1.0
    return [sign * float(scores[i]) for i in keep]  # type: ignore[arg-type]


def _ceiling_reading(tau: float | None) -> dict[str, Any]:
    """The record's ``ceiling``: the seed-noise ceiling's tau, whether it was measured, and the note to read it."""
    return {"kendall_tau": tau, "measured": tau is not None, "note": ceiling_note(tau)}


def _full_scores(
    n_c: int, full: Sequence[float | None] | None, full_seeds: Sequence[Sequence[float | None]] | None
) -> tuple[Sequence[float | None], list[float | None], int]:
    """Each candidate's full-fidelity score (the seed mean with ``full_seeds``), its seed SD, and the seed count."""
    if full_seeds is not None:
        if len(full_seeds) != n_c:
            raise ValueError("full_seeds must have one row per candidate")
        stats_ = [mean_std(row) for row in full_seeds]
        return (
            [m for m, _, _ in stats_],
            [sd for _, sd, _ in stats_],
            max((len(row) for row in full_seeds), default=1),
        )
    if full is None:
        raise ValueError("give full or full_seeds")
    return full, [None] * n_c, 1


def _ceiling_of(
    full_seeds: Sequence[Sequence[float | None]] | None,
    ranked: list[int],
    n_seeds: int,
    *,
    maximize: bool,
    seed: int,
) -> dict[str, Any]:
    """The seed-noise ceiling over the ``ranked`` candidates (see :func:`seed_ceiling`); not measured for one seed."""
    if full_seeds is not None and n_seeds >= 2:
        rows = [
            [(full_seeds[i][k] if k < len(full_seeds[i]) else None) for i in ranked] for k in range(n_seeds)
        ]
        return seed_ceiling(rows, maximize=maximize, seed=seed)
    return {
        "kendall_tau": None,
        "pairs": [],
        "interval": None,
        "reason": "one full-fidelity seed per candidate: retrain with --seeds 2 or more to "
        "measure the seed-noise ceiling",
    }


def _ceiling_fields(ceiling: dict[str, Any], tau: float | None) -> dict[str, Any]:
    """The ``seed_ceiling_*`` fields of the record, and the proxy's tau as a fraction of the ceiling."""
    return {
        "seed_ceiling_tau": ceiling["kendall_tau"],
        "seed_ceiling_interval": ceiling["interval"],
        "seed_ceiling_pairs": ceiling["pairs"],
        "seed_ceiling_reason": ceiling["reason"],
        "tau_over_ceiling": (tau / ceiling["kendall_tau"])
        if tau is not None and ceiling["kendall_tau"]
        else None,
    }


def _candidate_fields(
    trials: Sequence[int],
    full: Sequence[float | None],
    sds: list[float | None],
    done: list[int],
    ranked: list[int],
    not_learning: list[int],
) -> dict[str, Any]:
    """The record's per-candidate full-fidelity means and SDs, and how many candidates were ranked, retrained, ..."""
    return {
        "full_mean": {str(int(trials[i])): full[i] for i in done},
        "full_sd": {str(int(trials[i])): sds[i] for i in done if sds[i] is not None},
        "n": len(ranked),
        "n_candidates": len(trials),
        "n_retrained": len(done),
        "n_not_learning": len(not_learning),
        "not_learning": not_learning,
    }


def _add_notes(record: dict[str, Any], tau: float, n: int, n_seeds: int) -> None:
    """Add the note on how coarse tau is over few candidates, and the low-fidelity warning."""
    if n < 6:
        record["note"] = coarse_note(n)
    # Kendall tau is a ratio of pair counts: 0.5 can come out as 0.4999999999; that is not below 0.5.
    if tau < LOW_TAU - 1e-9:
        record["warning"] = low_tau_warning(
            tau, n, record["seed_ceiling_tau"], None if n_seeds < 2 else record["seed_ceiling_reason"]
        )


def _add_choice(record: dict[str, Any], trials: list[int], values: list[float], *, maximize: bool) -> None:
    """Fill ``record``'s proxy choice, best full trial, top-3 hit and regret over a pool in the search's order."""
    sign = 1.0 if maximize else -1.0
    first = 0  # the pool keeps the search's order: its first entry is the proxy's first choice that retrained
    best = max(range(len(trials)), key=lambda j: sign * values[j])
    record["top1_trial"] = trials[first]
    record["best_full_trial"] = trials[best]
    record["top3_contains_best"] = best < 3
    if len(trials) <= 3:
        record["top3_note"] = (
            f"holds trivially: only {len(trials)} candidates were retrained; retrain more than 3 "
            "(--top-k) for this to say anything"
        )
    if len(trials) >= 2:
        regret = top1_regret(values, first, maximize=maximize)
        record["top1_regret"] = regret
        if record["seed_sd"]:
            record["regret_in_seed_sd"] = regret / record["seed_sd"]
            record["regret_within_seed_noise"] = regret <= record["seed_sd"]
    elif record["reason"] is None:
        record["reason"] = "regret needs at least 2 retrained candidates"


def coarse_note(n: int) -> str:
    """Return how coarse Kendall tau is over ``n`` candidates (one swapped pair moves it by ``4 / (n (n - 1))``)."""
    return (
        f"tau over {n} candidates moves in steps of {4 / (n * (n - 1)):.2f} (one swapped pair): retrain more "
        "candidates (--top-k) for a figure that can tell a good proxy from a poor one"
    )


def low_tau_warning(
    tau: float, n: int, ceiling: float | None = None, ceiling_reason: str | None = None
) -> str:
    """Return the warning (with advice) for a Kendall tau below :data:`LOW_TAU`, read against the seed ceiling."""
    if ceiling is not None:
        against = (
            f"full training agrees with itself across seeds at tau {ceiling:.2f} on these candidates, so the "
            f"proxy reaches {tau / ceiling:.0%} of what any ranking could"
            if ceiling > 0
            else f"full training does not agree with itself across seeds (tau {ceiling:.2f}): the candidates' "
            "full-fidelity scores differ by less than seed noise, so no ranking of them can be trusted"
        )
    elif ceiling_reason:
        against = f"the seed-noise ceiling could not be measured on this run: {ceiling_reason}"
    else:
        against = "the seed-noise ceiling was not measured on this run; measure it with --seeds 2"
    return (
        f"low proxy fidelity: Kendall tau {tau:.2f} over {n} retrained candidates (below {LOW_TAU}; {against}). "
        "The proxy ranking is a weak guide to full-fidelity performance: give the proxy more epochs (proxy.epochs) "
        "or a larger input (proxy.scale / proxy.shape), measure which proxy settings rank like full training with "
        "`mednas calibrate-proxy TASK.yaml`, and retrain more candidates (--top-k) before trusting the winner."
        + (
            f" With {n} candidates one swapped pair moves tau by {4 / (n * (n - 1)):.2f}, so this figure is coarse."
            if n < 6
            else ""
        )
    )
