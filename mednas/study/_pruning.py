"""Pruning for multi-objective searches, which Optuna's pruners cannot prune: per epoch (flat) or per rung (ladder).

The flat pruner keeps what it compares in two trial user attributes: ``static_secondary`` (the secondary objectives
known before training) and ``primary_history`` (the primary objective per epoch); the ladder rule reads
``rung_values`` (every objective at each rung a trial completed). So every worker sharing the study compares
against the same trials.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mednas.config import TaskConfig

__all__ = ["MultiObjectivePruner", "ladder_promotes", "nondominated_ranks"]


class MultiObjectivePruner:
    """Median pruning on the primary objective for multi-objective studies (Optuna's pruners can't).

    A trial is compared only with trials that are at least as good on every secondary objective known before
    training (params, MACs, latency): a small network with a modest primary score may be on the Pareto front,
    and pruning it against bigger networks would empty the front of exactly the trade-offs it exists to show.

    Args:
        config: The task's ``search.pruner`` (``name``, ``warmup_epochs``, ``startup_trials``).
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    @staticmethod
    def static_secondary(task: TaskConfig, costs: dict[str, float]) -> list[float | None]:
        """The secondary objectives known before training (params, MACs, latency), each as "lower is better"."""
        return [
            (float(costs[m.metric]) * (1.0 if m.direction == "minimize" else -1.0))
            if m.metric in costs
            else None
            for m in task.objective.secondary
        ]

    def should_prune(self, trial: Any, epoch: int, value: float) -> bool:
        """Record ``value`` in the trial's ``primary_history``; True when it is below the cheaper trials' median."""
        from optuna.trial import TrialState

        cfg = self.config
        history = dict(trial.user_attrs.get("primary_history", {}))
        history[str(epoch)] = value
        trial.set_user_attr("primary_history", history)
        if cfg.name == "none" or epoch <= cfg.warmup_epochs:
            return False
        mine = trial.user_attrs.get("static_secondary") or []
        others = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if str(epoch) in t.user_attrs.get("primary_history", {}) and self._at_least_as_cheap(mine, t)
        ]
        if len([t for t in others if t.state == TrialState.COMPLETE]) < max(1, cfg.startup_trials):
            return False
        return value < float(np.median([t.user_attrs["primary_history"][str(epoch)] for t in others]))

    @staticmethod
    def _at_least_as_cheap(mine: list[float | None], other: Any) -> bool:
        theirs = other.user_attrs.get("static_secondary")
        if not mine or not theirs or len(theirs) != len(mine):
            return True
        return all(a is None or b is None or b <= a for a, b in zip(mine, theirs))


def ladder_promotes(trial: Any, rung: int, values: list[float], directions: list[str], eta: int) -> bool:
    """Whether a trial climbs past ladder rung ``rung`` in a multi-objective study (Optuna's pruners can't).

    The trial is compared with every trial that reached the rung (its user attribute ``rung_values``
    ``{str(rung): [values...]}``; failed trials left out) and promoted when it is within the best ``ceil(n / eta)``
    of those ``n`` trials, itself included, ranked by non-dominated sorting rank on all objectives at the rung,
    then by the primary objective (then by trial number). A lone first trial always climbs.

    Args:
        trial: The running Optuna trial (its own ``rung_values`` may already hold ``values``).
        rung: The rung just completed.
        values: The trial's objective values at that rung, one per objective.
        directions: ``minimize``/``maximize`` per objective.
        eta: The ladder's reduction factor.
    """
    from optuna.trial import TrialState

    key = str(rung)
    pool: list[tuple[int, list[float]]] = [
        (t.number, [float(v) for v in t.user_attrs["rung_values"][key]])
        for t in trial.study.get_trials(deepcopy=False)
        if t.number != trial.number
        and t.state != TrialState.FAIL
        and key in (t.user_attrs.get("rung_values") or {})
        and len(t.user_attrs["rung_values"][key]) == len(values)
    ]
    pool.append((trial.number, [float(v) for v in values]))
    # As "lower is better" on every objective; an undefined value (NaN) counts as the worst.
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    costs = [[s * v if math.isfinite(v) else math.inf for s, v in zip(signs, vals)] for _, vals in pool]
    ranks = nondominated_ranks(costs)
    order = sorted(range(len(pool)), key=lambda i: (ranks[i], costs[i][0], pool[i][0]))
    keep = math.ceil(len(pool) / eta)
    return order.index(len(pool) - 1) < keep


def nondominated_ranks(costs: list[list[float]]) -> list[int]:
    """The non-dominated sorting rank of each point (0: the Pareto front), every objective minimised.

    Example:
        >>> nondominated_ranks([[1, 2], [2, 1], [2, 2], [3, 3]])
        [0, 0, 1, 2]
    """
    n = len(costs)

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    ranks = [-1] * n
    left = set(range(n))
    rank = 0
    while left:
        front = {i for i in left if not any(dominates(costs[j], costs[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks
