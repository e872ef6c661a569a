"""The registries a task's names are checked against, installed by the layer that owns them.

A task names things that extension points own: search-space families (``search.space_options``), objective
metrics, a dataset layout (``data.format``) and losses. Their registries live with their base classes, in layers
above config, so config does not import them: :mod:`mednas.api` (which ``import mednas`` runs before any task can
be loaded) installs one provider per kind with :func:`install_registries`, and the models ask :func:`registry`
and :func:`registered`. A provider is called, and its registry imported, only when a task names something that is
not built in (or sets ``search.space_options``), so validating a task of built-ins imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

__all__ = ["KINDS", "NameRegistry", "install_registries", "registered", "registry"]

#: What a provider may be installed for: search spaces, metric terms, dataset layouts, losses.
Kind = Literal["space", "metric", "layout", "loss"]
KINDS: tuple[Kind, ...] = ("space", "metric", "layout", "loss")


class NameRegistry(Protocol):
    """What config asks of a registry (:class:`mednas._registry.PluginRegistry` is one)."""

    def find(self, name: str) -> Any:
        """The entry registered as ``name`` (built-in or plugin), or None; a broken plugin raises PluginError."""
        ...

    def names(self, pattern: str = "*") -> list[str]:
        """The sorted names of the built-in and loadable plugin entries."""
        ...


_PROVIDERS: dict[str, Callable[[], NameRegistry]] = {}


def install_registries(**providers: Callable[[], NameRegistry]) -> None:
    """Install, for each kind given as a keyword (``space=``, ``metric=``, ...), what returns its registry.

    A provider is called each time its registry is needed and should import it lazily (the metric registry
    pulls in scipy); a later call replaces an earlier one's providers.

    Raises:
        ValueError: For a keyword that is not one of :data:`KINDS`.
    """
    unknown = sorted(set(providers) - set(KINDS))
    if unknown:
        raise ValueError(f"no registry kind {unknown[0]!r}; kinds: {', '.join(KINDS)}")
    _PROVIDERS.update(providers)


def registry(kind: Kind) -> NameRegistry:
    """The registry of ``kind``.

    Raises:
        RuntimeError: When nothing installed one (``import mednas`` does, through :mod:`mednas.api`).
    """
    try:
        provider = _PROVIDERS[kind]
    except KeyError:
        raise RuntimeError(
            f"no {kind} registry installed in mednas.config (mednas.api installs them on import)"
        ) from None
    return provider()


def registered(kind: Kind, name: str) -> Any:
    """The class registered as ``name`` for ``kind``, or None.

    Raises:
        mednas.errors.PluginError: When ``name`` is a plugin's entry point that cannot be loaded.
    """
    return registry(kind).find(name)
