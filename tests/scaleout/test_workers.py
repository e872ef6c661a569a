"""Many workers on one study: journal file and PostgreSQL storages, a worker killed mid-trial, retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[2]


def _task_file(tmp_path: Path, datalist: Path, epochs: int = 30) -> Path:
    task = tiny_task(
        "classification",
        datalist,
        proxy={"shape": [16, 16], "epochs": epochs},
        search={"pruner": {"name": "none"}},
    )
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _running_trials(storage: str, study: str) -> list:  # noqa: ANN202
    import optuna

    from mednas.study import make_storage

    try:
        s = optuna.load_study(study_name=study, storage=make_storage(storage))
    except KeyError:  # the parent has not created the study yet
        return []
    return [t for t in s.get_trials(deepcopy=False) if t.state.name == "RUNNING"]


def _kill_a_worker_mid_trial(storage: str, study: str, parent: subprocess.Popen, deadline: float) -> int:
    """SIGKILL a child worker (not the parent) while it runs a trial that has passed epoch 2."""
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.communicate()
        for t in _running_trials(storage, study):
            pid = int(t.user_attrs.get("pid", -1))
            # Past epoch 2 (two reported epochs) of 30: killed at once, well before the trial can finish.
            if pid > 0 and pid != parent.pid and len(t.intermediate_values) >= 2:
                os.kill(pid, signal.SIGKILL)
                return t.number
        time.sleep(0.3)
    pytest.fail("no worker trial started in time")


def _check_study(storage: str, study: str, n_target: int, killed: int) -> None:
    import optuna

    from mednas.study import make_storage

    s = optuna.load_study(study_name=study, storage=make_storage(storage))
    trials = s.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "trial numbers are not unique"
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") >= n_target
    assert "RUNNING" not in states and "WAITING" not in states
    killed_trial = next(t for t in trials if t.number == killed)
    assert killed_trial.state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert retries and retries[0].params == killed_trial.params, (
        "the killed trial was not retried with its parameters"
    )
    assert any(t.state.name in ("COMPLETE", "PRUNED") for t in retries)


def _run_with_a_kill(tmp_path: Path, datalist: Path, storage: str, workers: int, n_target: int) -> None:
    task = _task_file(tmp_path, datalist)
    run = tmp_path / "run"
    study = f"scaleout-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "--quiet",
        "search",
        str(task),
        "--run-dir",
        str(run),
        "--storage",
        storage,
        "--study-name",
        study,
        "--n-trials",
        str(n_target),
        "--workers",
        str(workers),
    ]
    env = dict(os.environ, MEDNAS_MALLOC_TUNING="0")
    parent = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        killed = _kill_a_worker_mid_trial(storage, study, parent, time.monotonic() + 180)
        out, err = parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err
    _check_study(storage, study, n_target, killed)
    # every finished trial has its record, and the killed trial's record does not claim completion
    for p in run.glob("trials/*/metrics.json"):
        rec = json.loads(p.read_text())
        if rec["trial"] == killed:
            assert rec["state"] != "complete"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trials"]["complete"] + summary["n_trials"]["pruned"] >= n_target
    assert summary["n_trials"]["running"] == 0


# Slow (70 s on 2 busy cores): worker recovery is covered fast by tests/scaleout/test_recovery.py, and --workers end
# to end by tests/scaleout/test_throughput_benchmark.py.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_on_a_journal_file_survive_a_killed_worker(
    tmp_path: Path, tiny_cls_datalist: Path
) -> None:
    _run_with_a_kill(
        tmp_path, tiny_cls_datalist, f"journal:///{tmp_path / 'study.journal'}", workers=2, n_target=5
    )


@pytest.mark.postgres
@pytest.mark.slow  # as above; PostgreSQL itself stays in `make test` through tests/scaleout/test_concurrent_starts.py
@pytest.mark.timeout(900)
def test_three_workers_on_postgresql_survive_a_killed_worker(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    url = os.environ.get("MEDNAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MEDNAS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    _run_with_a_kill(tmp_path, tiny_cls_datalist, url, workers=3, n_target=6)
