"""Shared bundle fixtures, built once per session for the export and hostile-input tests (imported by tests/conftest.py).

A 2D classification search whose best candidate was never retrained (exported as a proxy candidate) and a 3D
segmentation search retrained through ``mednas retrain`` (exported as retrained). Tests that change a bundle work
on a copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mednas import api
from mednas.testing import tiny_task

_SCHEMA = Path(__file__).resolve().parents[1] / ".." / "shared" / "schemas" / "meta_schema_20240725.json"


def schema_path() -> Path | None:
    """MONAI's metadata schema for offline checks: ``$MEDNAS_BUNDLE_SCHEMA`` or ``../shared/schemas``, else None."""
    configured = os.environ.get("MEDNAS_BUNDLE_SCHEMA")
    path = Path(configured) if configured else _SCHEMA
    return path.resolve() if path.is_file() else None


@pytest.fixture(scope="session")
def schema() -> Path:
    """The schema file, or skip the test."""
    path = schema_path()
    if path is None:
        pytest.skip(f"MONAI metadata schema not found at {_SCHEMA} (set MEDNAS_BUNDLE_SCHEMA)")
    return path


@pytest.fixture(scope="session")
def cls_run(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path) -> SimpleNamespace:
    """A 2-trial tiny classification search, not retrained."""
    run_dir = tmp_path_factory.mktemp("export-cls") / "run"
    task = tiny_task("classification", tiny_cls_datalist, search={"n_trials": 2})
    result = api.search(task, run_dir=run_dir, n_trials=2, show_progress=False)
    return SimpleNamespace(run_dir=run_dir, summary=result.summary, datalist=tiny_cls_datalist)


@pytest.fixture(scope="session")
def cls_bundle(cls_run: SimpleNamespace) -> SimpleNamespace:
    """The classification run exported (proxy candidate) to RUN_DIR/bundle."""
    result = api.export(cls_run.run_dir, schema=schema_path())
    return SimpleNamespace(path=result.path, result=result, run=cls_run)


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory: pytest.TempPathFactory, tiny_seg_datalist: Path) -> SimpleNamespace:
    """A 2-trial tiny 3D segmentation search, its best candidate retrained for 2 epochs."""
    run_dir = tmp_path_factory.mktemp("export-seg") / "run"
    api.search(tiny_task("segmentation", tiny_seg_datalist), run_dir=run_dir, n_trials=2, show_progress=False)
    result = api.retrain(run_dir, top_k=1, epochs=2, seeds=1, show_progress=False)
    return SimpleNamespace(run_dir=run_dir, summary=result.summary, datalist=tiny_seg_datalist)


@pytest.fixture(scope="session")
def seg_bundle(seg_run: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The segmentation run exported (retrained candidate) to a folder outside the run directory."""
    out = tmp_path_factory.mktemp("seg-bundle") / "lesion-bundle"
    result = api.export(seg_run.run_dir, out, schema=schema_path())
    return SimpleNamespace(path=result.path, result=result, run=seg_run)


@pytest.fixture
def bundle_copy(tmp_path: Path):  # noqa: ANN201
    """Copy a bundle into the test's folder: ``bundle_copy(bundle_path) -> copy``."""

    def copy(path: Path) -> Path:
        return Path(shutil.copytree(path, tmp_path / "bundle-copy"))

    return copy
