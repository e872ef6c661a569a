"""The search-space registry: built-in families plus the ``mednas.spaces`` entry-point group."""

from __future__ import annotations

from mednas._registry import Registry
from mednas.spaces._base import BaseSearchSpace

SPACES: Registry[type[BaseSearchSpace]] = Registry("search space", entry_point_group="mednas.spaces")


def register_space(name: str):  # type: ignore[no-untyped-def]
    """Register a :class:`BaseSearchSpace` subclass under ``name`` and set its ``name`` attribute."""

    def decorator(cls: type[BaseSearchSpace]) -> type[BaseSearchSpace]:
        cls.name = name
        return SPACES.register(name)(cls)

    return decorator


def create_space(name: str, **options: object) -> BaseSearchSpace:
    """Instantiate the family registered as ``name`` with its options."""
    _ensure_builtins()
    return SPACES.get(name)(**options)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered search spaces matching ``pattern``."""
    _ensure_builtins()
    return SPACES.names(pattern)


def _ensure_builtins() -> None:
    # The built-in families live in private modules; importing them here (not in __init__) keeps
    # `import mednas` free of MONAI and torch.
    from mednas.spaces import _builtin  # noqa: F401
