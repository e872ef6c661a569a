"""The data plan decides the preprocessing in one place and records it once (``preprocessing.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mednas.data import plan_data
from mednas.data._plan import PREPROCESSING, decide_preprocessing, recorded_preprocessing
from mednas.errors import RunDirError
from mednas.rundir import RunDir
from tests.data._builders import cls_task, config, png, write_csv


def _task(root: Path, *overrides: str):  # noqa: ANN202
    rows = []
    for i in range(8):
        png(root / f"i{i}.png", seed=i)
        rows.append({"image": f"i{i}.png", "label": int(i < 3), "patient": f"p{i}"})
    return config(cls_task({"format": "csv", "path": str(write_csv(root / "c.csv", rows))}), *overrides)


def test_plan_records_its_preprocessing_once(tmp_path: Path) -> None:
    task = _task(tmp_path)
    run_dir = RunDir(tmp_path / "run")
    plan = plan_data(task, run_dir, salt="salt")
    path = run_dir.root / PREPROCESSING
    assert json.loads(path.read_text()) == plan.prep.to_dict()
    assert plan.prep == decide_preprocessing(task, plan.fingerprint)
    assert plan.prep.normalize == plan.fingerprint["suggestions"]["normalize"]  # data.normalize: auto
    assert recorded_preprocessing(run_dir, task, plan.fingerprint) == plan.prep.to_dict()
    # Resuming decides the same and leaves the record alone.
    mtime = path.stat().st_mtime_ns
    plan_data(task, run_dir, salt="salt")
    assert path.stat().st_mtime_ns == mtime


def test_decision_follows_the_task_then_the_fingerprint(tmp_path: Path) -> None:
    task = _task(tmp_path, "data.normalize=zscore")
    fp = {"suggestions": {"normalize": "ct", "ct_window": [-100, 200]}}
    prep = decide_preprocessing(task, fp)
    assert prep.normalize == "zscore" and prep.ct_window == (-100.0, 200.0)
    auto = decide_preprocessing(_task(tmp_path), fp)
    assert auto.normalize == "ct"
    assert decide_preprocessing(_task(tmp_path), {}).to_dict()["ct_window"] == [-1000.0, 1000.0]
    assert decide_preprocessing(_task(tmp_path), {}).normalize == "percentile"


def test_recorded_preprocessing_of_older_runs_and_broken_records(tmp_path: Path) -> None:
    task = _task(tmp_path)
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    fp = {"suggestions": {"normalize": "zscore"}}
    # A run made before the record existed: decided again, by the plan's own rule.
    assert recorded_preprocessing(run_dir, task, fp) == decide_preprocessing(task, fp).to_dict()
    assert not (run_dir.root / PREPROCESSING).exists()  # reading never writes
    # What the run recorded wins over what the fingerprint would suggest now.
    recorded = {**decide_preprocessing(task, fp).to_dict(), "normalize": "percentile"}
    (run_dir.root / PREPROCESSING).write_text(json.dumps(recorded))
    assert recorded_preprocessing(run_dir, task, fp)["normalize"] == "percentile"
    (run_dir.root / PREPROCESSING).write_text(json.dumps({"normalize": "zscore"}))
    with pytest.raises(RunDirError, match="preprocessing.json: not a preprocessing record"):
        recorded_preprocessing(run_dir, task, fp)
