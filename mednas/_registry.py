"""Explicit registries: ``@REG.register("name")``, ``REG.get("name")``, ``REG.names("pattern*")``.

Third parties add entries through an entry-point group (e.g. ``mednas.spaces``), loaded only when a name is
not found among the built-in entries. Unknown names fail with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    match = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """A name -> object mapping with suggestions for misspelt names.

    Args:
        kind: What the entries are, for error messages ("search space").
        entry_point_group: Entry-point group that third-party packages use to add entries.

    Example:
        >>> LOSSES: Registry[type] = Registry("loss")
        >>> @LOSSES.register("mine")
        ... class Mine: ...
        >>> LOSSES.get("mine") is Mine
        True
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.load()

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            KeyError: With a one-line message naming the unknown entry and the closest known one.
        """
        if name not in self._entries:
            self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, list(self._entries))}; known: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Return the sorted names matching a shell-style ``pattern``."""
        self._load_entry_points()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
