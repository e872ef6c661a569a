"""Trial-like objects for sampling search spaces without an Optuna study.

:class:`RandomTrial` draws every ``suggest_*`` call from a seeded NumPy generator and records what it drew;
:class:`ReplayTrial` plays recorded values back, so a spec can be re-sampled exactly (TorchIO's make/apply split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

__all__ = ["RandomTrial", "ReplayTrial"]


class _RecordingTrial:
    """Shared bookkeeping: Optuna's distribution checks, and the ``params`` and ``distributions`` drawn."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """Suggest an integer in ``[low, high]`` (Optuna's signature and checks)."""
        return int(self._suggest(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Suggest a float in ``[low, high]`` (Optuna's signature and checks)."""
        return float(self._suggest(name, FloatDistribution(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """Suggest one of ``choices``, which Optuna restricts to None, bool, int, float and str."""
        return self._suggest(name, CategoricalDistribution(choices))

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name in self.distributions:
            # Optuna returns the first value when a trial suggests the same name twice.
            check_distribution_compatibility(self.distributions[name], distribution)
            return self.params[name]
        value = self._draw(name, distribution)
        self.params[name] = value
        self.distributions[name] = distribution
        return value

    def _draw(self, name: str, distribution: BaseDistribution) -> Any:
        raise NotImplementedError


class RandomTrial(_RecordingTrial):
    """A trial that draws each suggestion uniformly (log-uniformly where asked) from a seeded generator.

    Args:
        seed: Seed of the ``numpy.random.Generator``; the same seed gives the same draws.

    Attributes:
        params: Name -> value of every suggestion so far, ready for :class:`ReplayTrial`.
        distributions: Name -> the ``optuna.distributions`` object each suggestion was drawn from.

    Example:
        >>> trial = RandomTrial(seed=0)
        >>> depth = trial.suggest_int("unet.depth", 3, 5)
        >>> ReplayTrial(trial.params).suggest_int("unet.depth", 3, 5) == depth
        True
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _draw(self, name: str, distribution: BaseDistribution) -> Any:
        rng = self._rng
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[int(rng.integers(len(distribution.choices)))]
        if isinstance(distribution, IntDistribution):
            if distribution.log:
                value = math.exp(rng.uniform(math.log(distribution.low), math.log(distribution.high + 1)))
                return min(int(value), distribution.high)
            n_steps = (distribution.high - distribution.low) // distribution.step
            return distribution.low + distribution.step * int(rng.integers(n_steps + 1))
        if isinstance(distribution, FloatDistribution):
            if distribution.step is not None:
                n_steps = round((distribution.high - distribution.low) / distribution.step)
                return distribution.low + distribution.step * int(rng.integers(n_steps + 1))
            if distribution.log:
                return math.exp(rng.uniform(math.log(distribution.low), math.log(distribution.high)))
            return float(rng.uniform(distribution.low, distribution.high))
        raise TypeError(f"unsupported distribution for {name!r}: {distribution!r}")


class ReplayTrial(_RecordingTrial):
    """A trial that returns recorded values, like ``optuna.trial.FixedTrial`` but strict.

    Args:
        params: Name -> value, e.g. :attr:`RandomTrial.params` or a finished Optuna trial's ``params``.

    Raises:
        ValueError: From a ``suggest_*`` call whose name is not in ``params`` or whose recorded value lies
            outside the distribution now asked for (the space changed since the values were recorded).
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        self._recorded = dict(params)

    def _draw(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self._recorded:
            raise ValueError(f"no recorded value for parameter {name!r}; recorded: {sorted(self._recorded)}")
        value = self._recorded[name]
        internal = distribution.to_internal_repr(value)
        if not distribution._contains(internal):
            raise ValueError(f"recorded value {value!r} of {name!r} is outside {distribution!r}")
        return value

    @property
    def unused(self) -> list[str]:
        """Recorded names that no ``suggest_*`` call asked for (a sign that the space changed)."""
        return sorted(set(self._recorded) - set(self.params))
