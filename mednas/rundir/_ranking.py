"""The search's ranking rules, shared by the search (summary, progress, re-evaluation) and the steps after it.

A trial ranks when it is complete, meets every constraint and has values; one that never started learning comes
after all others; a trial re-evaluated with extra seeds ranks by its seed mean. Several objectives: the Pareto
front first. These read the study storage (Optuna's frozen trials and the study's user attributes), which every
worker shares, so every process ranks the same trials the same way.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["ATTR_PREFIX", "best_trials", "is_feasible", "pareto_front", "reevaluations"]

#: Study user attribute ``reevaluation:<trial number>`` holds each trial's result. Optuna does not let a
#: finished trial's own attributes change, so the study carries them and :func:`best_trials`
#: merges them into the trials it returns (``proxy_seed_values``, ``proxy_mean``, ``proxy_std``, ...).
ATTR_PREFIX = "reevaluation:"


def reevaluations(study: Any) -> dict[int, dict[str, Any]]:
    """Re-evaluation results stored on the study, by trial number (see :data:`ATTR_PREFIX`)."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(ATTR_PREFIX) and isinstance(value, dict):
            try:
                out[int(key[len(ATTR_PREFIX) :])] = value
            except ValueError:
                continue
    return out


def is_feasible(t: Any) -> bool:
    return t.user_attrs.get("feasible", True) is not False


def _signs(study: Any) -> list[float]:
    return [1.0 if d.name == "MAXIMIZE" else -1.0 for d in study.directions]


def _with_reevaluation(study: Any, trials: list[Any]) -> list[Any]:
    """Copies of ``trials`` whose user attributes include their re-evaluation (stored on the study)."""
    extra = reevaluations(study)
    if not extra:
        return trials
    out = []
    for t in trials:
        r = extra.get(t.number)
        if r:
            t = copy.copy(t)
            t.user_attrs = {
                **t.user_attrs,
                "proxy_seed_values": list(r["values"]),
                "proxy_mean": r["mean"],
                "proxy_std": r["std"],
                "proxy_seeds": list(r.get("seeds") or []),
            }
        out.append(t)
    return out


def _primary(t: Any, by_mean: bool = True) -> float:
    """A trial's primary proxy score: the mean over seeds when it was re-evaluated, else its single value."""
    mean = t.user_attrs.get("proxy_mean") if by_mean else None
    return float(mean) if mean is not None else float(t.values[0])


def pareto_front(study: Any, *, by_mean: bool = True) -> list[Any]:
    """Non-dominated complete trials that meet every constraint and started learning, best primary first.

    A trial that merely repeats an earlier one's architecture (``duplicate_of``) is left out. Dominance uses
    the measured values; the order uses the seed mean of re-evaluated trials (``proxy_mean``).
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    pool = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values
        and is_feasible(t)
        and t.user_attrs.get("learned") is not False
        and "duplicate_of" not in t.user_attrs
    ]
    pool = _with_reevaluation(study, pool)
    scored = [(t, [s * v for s, v in zip(signs, t.values)]) for t in pool]

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a)) for _, b in scored)

    front = [t for t, a in scored if not dominated(a)]
    return sorted(front, key=lambda t: (-signs[0] * _primary(t, by_mean), t.number))


def best_trials(study: Any, k: int = 1, *, by_mean: bool = True) -> list[Any]:
    """The ``k`` best complete trials by the primary objective.

    Trials that violate a constraint are never included; trials that never started learning come after all
    others. A trial re-evaluated with extra seeds (``search.reevaluate``) ranks by its seed mean, which the
    returned trial carries as user attributes ``proxy_mean``, ``proxy_std``, ``proxy_seed_values`` and
    ``proxy_seeds``. Multi-objective studies list their Pareto front first (by the primary objective), then
    the rest.

    Args:
        study: The search's study.
        k: How many trials.
        by_mean: Rank re-evaluated trials by their seed mean (False: by their first, single-seed value).
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and is_feasible(t)
    ]
    complete = _with_reevaluation(study, complete)
    complete.sort(
        key=lambda t: (t.user_attrs.get("learned") is False, -signs[0] * _primary(t, by_mean), t.number)
    )
    if len(study.directions) > 1:
        front = pareto_front(study, by_mean=by_mean)
        numbers = {t.number for t in front}
        complete = front + [t for t in complete if t.number not in numbers]
    return complete[:k]
