"""Explicit registries: ``@REG.register("name")``, ``REG.get("name")``, ``REG.names("pattern*")``.

Third parties add entries through an entry-point group (e.g. ``mednas.spaces``), loaded only when a name is
not found among the built-in entries. Unknown names fail with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from mednas.errors import PluginError

T = TypeVar("T")

logger = logging.getLogger("mednas")


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
            raise KeyError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, list(self._entries))}; known: {known}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Return the sorted names matching a shell-style ``pattern``."""
        self._load_entry_points()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class PluginRegistry(Registry[T]):
    """A :class:`~mednas._registry.Registry` of subclasses of ``base``, filled by built-ins and an entry-point group.

    Args:
        kind: What the entries are, for error messages ("search space").
        entry_point_group: The group third-party packages add entries to (``mednas.spaces``).
        base: The extension point's base class; entries must be concrete subclasses of it.
        builtins: Module whose import registers the built-in entries (imported on first use).

    Example:
        >>> from mednas.spaces import SPACES
        >>> "resnet" in SPACES
        True
    """

    def __init__(self, kind: str, entry_point_group: str, *, base: type, builtins: str) -> None:
        super().__init__(kind, entry_point_group)
        self.base = base
        self.builtins = builtins
        self._builtin_names: frozenset[str] | None = None
        self._broken: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers a ``base`` subclass under ``name`` and sets its ``name`` attribute."""
        parent = super().register(name)

        def decorator(obj: T) -> T:
            if isinstance(obj, type) and issubclass(obj, self.base):
                obj.name = name  # type: ignore[attr-defined]
            return parent(obj)

        return decorator

    def ensure_builtins(self) -> None:
        """Import the module that registers the built-in entries (once)."""
        if self._builtin_names is None:
            importlib.import_module(self.builtins)
            self._builtin_names = frozenset(self._entries)

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            PluginError: When ``name`` is an entry point that cannot be loaded (one line naming it).
            KeyError: With a did-you-mean for a name nobody registered.
        """
        self.ensure_builtins()
        if name not in self._entries:
            self._load_entry_points()
            if name in self._broken:
                raise PluginError(self._broken[name])
        return super().get(name)

    def find(self, name: str) -> T | None:
        """Return the entry called ``name``, or None when nobody registered it (a broken plugin still raises)."""
        self.ensure_builtins()
        if name not in self._entries:
            self._load_entry_points()
            if name in self._broken:
                raise PluginError(self._broken[name])
        return self._entries.get(name)

    def names(self, pattern: str = "*") -> list[str]:
        """Return the sorted names (built-ins and loadable plugins) matching a shell-style ``pattern``."""
        self.ensure_builtins()
        return super().names(pattern)

    def __contains__(self, name: object) -> bool:
        self.ensure_builtins()
        return isinstance(name, str) and (name in self._entries or name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self.ensure_builtins()
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if self._builtin_names and ep.name in self._builtin_names:
                logger.warning(
                    "%s entry point %r (%s) ignored: a built-in %s has that name",
                    self.entry_point_group,
                    ep.name,
                    ep.value,
                    self.kind,
                )
                continue
            if ep.name in self._entries:
                continue  # registered by its module's decorator while another entry point was loaded
            before = set(self._entries)
            try:
                self._add_plugin(ep.name, ep.load())
            except Exception as err:
                for added in set(self._entries) - before:
                    del self._entries[added]
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                message = (
                    f"{self.kind} plugin {ep.name!r} (entry point {ep.value!r} in group "
                    f"{self.entry_point_group!r}) cannot be used: {type(err).__name__}: {first}"
                )
                self._broken[ep.name] = message
                logger.warning("%s", message)

    def _add_plugin(self, name: str, obj: Any) -> None:
        """Check that ``obj`` is a concrete ``base`` subclass registered as ``name``, and register it."""
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise TypeError(f"{obj!r} is not a subclass of {self.base.__module__}.{self.base.__name__}")
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            raise TypeError(f"{obj.__name__} does not implement {missing}")
        registered = obj.__dict__.get("name", "")  # its own name, not one inherited from a registered parent
        if registered and registered != name:
            raise ValueError(
                f"{obj.__name__} is registered as {registered!r}, the entry point names it {name!r}"
            )
        if self._entries.get(name) is not obj:
            self.register(name)(obj)  # type: ignore[arg-type]

    @contextmanager
    def isolated(self) -> Iterator[PluginRegistry[T]]:
        """Within the block, forget loaded plugins so the entry-point group is read again; restore afterwards.

        For tests that install or inject plugins (see :func:`mednas.testing.fresh_plugins`).
        """
        self.ensure_builtins()
        saved = (dict(self._entries), self._entry_points_loaded, dict(self._broken))
        builtin = self._builtin_names or frozenset()
        self._entries = {k: v for k, v in self._entries.items() if k in builtin}
        self._entry_points_loaded, self._broken = False, {}
        try:
            yield self
        finally:
            self._entries, self._entry_points_loaded, self._broken = dict(saved[0]), saved[1], dict(saved[2])
