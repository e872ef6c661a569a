"""Fixtures for the data tests: a private cache per test where a test counts what is built, and a clean logger."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``MEDNAS_CACHE_DIR`` for this test only (proxy cache, demo data and augmented copies land here)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("MEDNAS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def restore_mednas_logger() -> Iterator[None]:
    """Undo what ``mednas.cli.main`` does to the ``mednas`` logger (handlers, level, propagation)."""
    logger = logging.getLogger("mednas")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
