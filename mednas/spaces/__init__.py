"""Search spaces: families of MONAI networks whose constructor arguments a trial samples.

``create_space("dynunet", max_filters=64).sample(trial, ctx)`` returns an :class:`~mednas.spec.ArchSpec`;
:func:`estimate_cost` prices it before training, and :func:`required_divisor` says how far to pad inputs.
"""

from __future__ import annotations

from mednas.spaces._base import BaseSearchSpace, SpaceContext, TrialLike
from mednas.spaces._cost import Cost, check_budget, estimate_cost
from mednas.spaces._plan import padded_shape, required_divisor
from mednas.spaces._registry import SPACES, PluginError, create_space, list_spaces, register_space

__all__ = [
    "SPACES",
    "BaseSearchSpace",
    "Cost",
    "PluginError",
    "RandomTrial",
    "ReplayTrial",
    "SpaceContext",
    "TrialLike",
    "check_budget",
    "create_space",
    "estimate_cost",
    "list_spaces",
    "padded_shape",
    "register_space",
    "required_divisor",
]


def __getattr__(name: str) -> object:
    # The trial stand-ins import Optuna's distributions: loaded on first use, so `import mednas.spaces` stays light.
    if name in ("RandomTrial", "ReplayTrial"):
        from mednas.spaces import _trials

        return getattr(_trials, name)
    raise AttributeError(f"module 'mednas.spaces' has no attribute {name!r}")
