"""Installed package versions: the one lookup behind env.json, the bundle metadata and the page footers.

A package that is not installed has no version (None) rather than an error, so records stay writable on a
machine without the optional exporters.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["package_version", "package_versions"]


def package_version(dist: str) -> str | None:
    """Return the installed version of distribution ``dist``, or None when it is not installed.

    Example:
        >>> package_version("no-such-distribution-mednas") is None
        True
    """
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_versions(dists: Iterable[str]) -> dict[str, str | None]:
    """Return ``{dist: version or None}`` for each distribution in ``dists``, in order."""
    return {dist: package_version(dist) for dist in dists}
