"""Shared fixtures for the retrain tests: one finished tiny search that tests retrain copies of."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mednas import api
from mednas.testing import tiny_task


def _cls_task(datalist: Path) -> dict:
    # No pruning: every trial completes, so there are three candidates to retrain. Patience beyond any epoch budget
    # used here, so that a candidate runs as many epochs as a test asks for.
    return tiny_task(
        "classification",
        datalist,
        search={"n_trials": 3, "pruner": {"name": "none"}},
        training={"shape": [32, 32], "batch_size": 8, "epochs": 3, "patience": 500, "augment": False},
    )


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path) -> SimpleNamespace:
    """A finished 3-trial search on tiny data; tests retrain copies of it."""
    run_dir = tmp_path_factory.mktemp("searched") / "run"
    return SimpleNamespace(
        run_dir=run_dir, result=api.search(_cls_task(tiny_cls_datalist), run_dir=run_dir, show_progress=False)
    )


@pytest.fixture
def searched_copy(tmp_path: Path, searched: SimpleNamespace) -> Path:
    """A private copy of the searched run directory (its study is SQLite inside it, so the copy is independent)."""
    return Path(shutil.copytree(searched.run_dir, tmp_path / "run"))


@pytest.fixture(scope="session")
def retrained(tmp_path_factory: pytest.TempPathFactory, searched: SimpleNamespace) -> SimpleNamespace:
    """The search retrained top-3, with spies on test-split reads and on the test evaluation."""
    import mednas.data._plan as plan_mod
    import mednas.metrics._objective as objective_mod

    run_dir = Path(shutil.copytree(searched.run_dir, tmp_path_factory.mktemp("retrained") / "run"))
    search = searched.result
    splits = json.loads((run_dir / "splits.json").read_text())
    loads: list[list[str]] = []
    reports: list[dict[str, Any]] = []
    real_load, real_report = plan_mod.load_arrays, objective_mod.objective_report

    def spy_load(cases, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        loads.append([c.key for c in cases])
        return real_load(cases, *a, **kw)

    def spy_report(task, outputs, data, **kw):  # noqa: ANN001, ANN003, ANN202
        reports.append({"keys": list(data.keys), **kw})
        return real_report(task, outputs, data, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_mod, "load_arrays", spy_load)
        mp.setattr(objective_mod, "objective_report", spy_report)
        result = api.retrain(run_dir, top_k=3, n_resamples=100, show_progress=False)
    return SimpleNamespace(
        run_dir=run_dir, search=search, result=result, splits=splits, loads=loads, reports=reports
    )
