"""Where tests find the real images in ``../shared/data`` (override with ``MEDNAS_SHARED_DATA``).

Every test that needs that folder goes through :func:`shared_data_dir`, so a checkout without it skips those
tests with one clear reason instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["ENV_VAR", "shared_data_dir", "shared_file"]

ENV_VAR = "MEDNAS_SHARED_DATA"
_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data_dir() -> Path:
    """Return the shared data folder, or skip the calling test when it is absent.

    The folder is ``$MEDNAS_SHARED_DATA`` when set, else ``<repository>/../shared/data``.
    """
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else _DEFAULT
    if not path.is_dir():
        source = f"${ENV_VAR}" if configured else f"the default (set ${ENV_VAR} to override)"
        pytest.skip(f"shared test data folder {path} not found ({source})")
    return path.resolve()


def shared_file(*parts: str) -> Path:
    """Return a file inside the shared data folder, or skip the calling test when it is absent.

    Example:
        >>> shared_file("pyradiomics", "brain1_image.nrrd")  # doctest: +SKIP
    """
    path = shared_data_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared test file {path} not found")
    return path
