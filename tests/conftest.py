"""Session-wide test settings: one torch thread, a private mednas cache, no progress bars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_mednas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Tiny ops on a shared 2-core CPU crawl with two OpenMP threads (barrier spinning); tests use one.
    import torch

    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("mednas-cache")
    old = {
        k: os.environ.get(k)
        for k in ("MEDNAS_CACHE_DIR", "MEDNAS_NO_PROGRESS", "OMP_NUM_THREADS", "MEDNAS_TORCH_THREADS")
    }
    os.environ["MEDNAS_CACHE_DIR"] = str(cache)
    os.environ["MEDNAS_NO_PROGRESS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses tests start
    # One thread decided for every mednas command the tests run, as a parent mednas decides for its workers: no
    # command measures the machine's load, so no "this machine is busy" line joins the output a test reads.
    os.environ["MEDNAS_TORCH_THREADS"] = "1"
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_cls_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-image toy 2D classification dataset (shared by tests; read-only)."""
    from mednas.testing import tiny_classification_data

    return tiny_classification_data(tmp_path_factory.mktemp("tiny-cls"))


@pytest.fixture(scope="session")
def tiny_seg_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-volume toy 3D segmentation dataset (shared by tests; read-only)."""
    from mednas.testing import tiny_segmentation_data

    return tiny_segmentation_data(tmp_path_factory.mktemp("tiny-seg"))


# Two tiny runs and their bundles, built once per session and shared by tests/bundle and tests/hostile.
from tests._bundles import bundle_copy, cls_bundle, cls_run, schema, seg_bundle, seg_run  # noqa: E402, F401
