"""The export tests' fixtures live in :mod:`tests._bundles` (shared with ``tests/hostile``, built once per session)."""

from __future__ import annotations

from tests._bundles import schema_path

__all__ = ["schema_path"]
