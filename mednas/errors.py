"""Errors that mednas reports to users as one line, with a non-zero exit status.

Anything raised as a :class:`MednasError` is the user's to fix (a bad key, a corrupt file); the CLI prints
``mednas: error: <message>`` and exits with :attr:`MednasError.exit_code`. Other exceptions are bugs.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MednasError", "PluginError", "RunDirError", "SpecError"]


class MednasError(Exception):
    """An error in the user's input or environment, shown as one line without a traceback."""

    exit_code: int = 1


class ConfigError(MednasError):
    """A task file, preset or ``--set`` override is invalid (exit status 2)."""

    exit_code = 2


class DataError(MednasError):
    """An image, label or dataset layout cannot be used (exit status 3)."""

    exit_code = 3


class RunDirError(MednasError):
    """A run directory is missing, incomplete or belongs to a different configuration (exit status 4)."""

    exit_code = 4


class SpecError(MednasError, ValueError):
    """An architecture spec names something mednas will not build: a callable that is not an allowed network
    class, an unknown keyword argument, or a network too large to allocate (exit status 6)."""

    exit_code = 6


class PluginError(MednasError):
    """A third-party plugin named by an entry point cannot be loaded or does not fit its extension point."""

    exit_code = 2
