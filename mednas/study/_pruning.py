"""Median pruning for multi-objective searches, which Optuna's pruners cannot prune.

The pruner keeps what it compares in two trial user attributes: ``static_secondary`` (the secondary objectives
known before training) and ``primary_history`` (the primary objective per epoch), so every worker sharing the
study compares against the same trials.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mednas.config import TaskConfig

__all__ = ["MultiObjectivePruner"]


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
