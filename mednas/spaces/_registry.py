"""The search-space registry (built-in families plus the ``mednas.spaces`` entry-point group), and the plugin
registry that every extension point uses: spaces, metric terms, dataset layouts and losses.

A :class:`PluginRegistry` fills itself on first use: it imports the module that registers the built-ins, then
(only when a name is not among them, or when all names are listed) loads its entry-point group once. A plugin
that cannot be loaded is remembered with a one-line error naming its entry point, raised when it is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from mednas._registry import PluginRegistry
from mednas.errors import PluginError
from mednas.spaces._base import BaseSearchSpace

__all__ = ["SPACES", "PluginError", "PluginRegistry", "create_space", "list_spaces", "register_space"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


SPACES: PluginRegistry[type[BaseSearchSpace]] = PluginRegistry(
    "search space", "mednas.spaces", base=BaseSearchSpace, builtins="mednas.spaces._builtin"
)


def register_space(name: str) -> Callable[[type[BaseSearchSpace]], type[BaseSearchSpace]]:
    """Register a :class:`BaseSearchSpace` subclass under ``name`` and set its ``name`` attribute.

    Built-in families and plugins use this same decorator; a plugin package also names the class in its
    ``mednas.spaces`` entry-point group so that mednas finds it without being told to import it.
    """
    return SPACES.register(name)


def create_space(name: str, **options: object) -> BaseSearchSpace:
    """Instantiate the family registered as ``name`` with its options."""
    return SPACES.get(name)(**options)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered search spaces matching ``pattern``."""
    return SPACES.names(pattern)


def _ensure_builtins() -> None:
    # The built-in families live in private modules; importing them here (not in __init__) keeps
    # `import mednas` free of MONAI and torch.
    SPACES.ensure_builtins()
