"""Searches started at the same moment: on one new run directory (serialised by its lock; none deletes another's
files) and on one fresh PostgreSQL database (Optuna's schema creation races are retried, not reported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[2]


def _task_file(tmp_path: Path, datalist: Path) -> Path:
    task = tiny_task(
        "classification",
        datalist,
        proxy={"shape": [16, 16], "epochs": 1},
        search={"pruner": {"name": "none"}, "spaces": ["resnet"]},
    )
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _start_together(cmds: list[list[str]]) -> list[tuple[int, str, str]]:
    """Start every command within the same moment; return (exit status, stdout, stderr) of each."""
    env = dict(
        os.environ,
        MEDNAS_NO_PROGRESS="1",
        MEDNAS_MALLOC_TUNING="0",
        OMP_NUM_THREADS="1",
        MEDNAS_TORCH_THREADS="1",
    )
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in cmds
    ]
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=540)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def _search(task: Path, run: Path, n_trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mednas",
        "--quiet",
        "search",
        str(task),
        "--run-dir",
        str(run),
        "--n-trials",
        str(n_trials),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)  # five processes, each given 540 s
@pytest.mark.parametrize("repetition", [1, 2, 3])
def test_five_searches_started_together_on_one_new_run_dir(
    tmp_path: Path, tiny_cls_datalist: Path, repetition: int
) -> None:
    import optuna

    from mednas.study import make_storage

    task = _task_file(tmp_path, tiny_cls_datalist)
    run = tmp_path / "runs" / "together"
    n = 5
    t0 = time.monotonic()
    results = _start_together([_search(task, run, n) for _ in range(5)])
    took = time.monotonic() - t0
    for code, _out, err in results:
        assert "Traceback" not in err, err[-3000:]
        assert code == 0, err[-2000:]
    marker = json.loads((run / ".mednas-run").read_text())
    assert marker["config_hash"] == json.loads((run / "env.json").read_text())["config_hash"]
    storage = make_storage(f"sqlite:///{run / 'study.db'}")
    studies = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in studies] == ["tiny-cls"], "not one study"
    trials = optuna.load_study(study_name="tiny-cls", storage=storage).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") >= n and "RUNNING" not in states, states
    for t in trials:  # every completed trial of every process is on disk, complete
        if t.state.name == "COMPLETE":
            rec = json.loads((run / "trials" / str(t.number) / "metrics.json").read_text())
            assert rec["state"] == "complete" and rec["trial"] == t.number
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_trials"]["complete"] == states.count("COMPLETE")
    salt = (run / ".salt").read_text().strip()
    assert (
        salt and optuna.load_study(study_name="tiny-cls", storage=storage).user_attrs["salt_shared"] == salt
    )
    pids = {t.user_attrs.get("pid") for t in trials}
    print(
        f"repetition {repetition}: 5 starts in {took:.1f}s, {len(trials)} trials from {len(pids)} processes"
    )


def _fresh_database(url: str) -> tuple[str, str]:
    """Create ``mednas_race_<random>`` on the server of ``url``; return its URL and name."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = f"mednas_race_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=u.database,
        autocommit=True,
        connect_timeout=10,
    ) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False), name


def _drop_database(url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=u.database,
        autocommit=True,
        connect_timeout=10,
    ) as con:
        # The three workers have exited, but the server may still hold a backend on the database for a moment
        # (an autovacuum worker, owned by the superuser). DROP ... WITH (FORCE) must then terminate a process
        # of another role, which CI's unprivileged role may not do (InsufficientPrivilege, seen in CI): a plain
        # DROP, which waits out autovacuum itself, is retried while the database is in use.
        for _ in range(30):
            try:
                con.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(1.0)
        try:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:  # a stray database in a throw-away cluster; the test's verdict stands
            warnings.warn(f"could not drop test database {name}: {type(exc).__name__}: {exc}", stacklevel=1)


# Three processes (about 17 s each repetition on 2 cores): in the slow set, which .ci/run runs with PostgreSQL after
# `make test` (issue 16: multi-worker tests are slow, `make test` stays within 6 minutes).
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)  # three processes, each given 540 s
@pytest.mark.parametrize("repetition", [1, 2])  # repeated: the races are timing-dependent
def test_three_searches_started_together_on_a_fresh_postgresql_database(
    tmp_path: Path, tiny_cls_datalist: Path, repetition: int
) -> None:
    import optuna

    from mednas.study import make_storage

    url = os.environ.get("MEDNAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MEDNAS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    try:
        fresh, name = _fresh_database(url)
    except Exception as exc:  # noqa: BLE001 - an older server set-up without CREATEDB
        pytest.skip(f"cannot create a database on {url.split('@')[-1]}: {type(exc).__name__}")
    try:
        task = _task_file(tmp_path, tiny_cls_datalist)
        n = 3
        t0 = time.monotonic()
        results = _start_together(
            [
                _search(task, tmp_path / f"run-{i}", n, "--storage", fresh, "--study-name", "race")
                for i in range(3)
            ]
        )
        took = time.monotonic() - t0
        for code, _out, err in results:
            assert "Traceback" not in err, err[-3000:]
            assert code == 0, err[-2000:]
        storage = make_storage(fresh)
        study = optuna.load_study(study_name="race", storage=storage)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        assert states.count("COMPLETE") + states.count("PRUNED") >= n and "RUNNING" not in states, states
        salts = {(tmp_path / f"run-{i}" / ".salt").read_text() for i in range(3)}
        assert salts == {study.user_attrs["salt_shared"]}, "the workers do not share one salt"
        storage.remove_session()  # this process's own connection, or the plain DROP below waits on it
        storage.engine.dispose()
        print(f"repetition {repetition}: 3 starts on a fresh database in {took:.1f}s, {len(states)} trials")
    finally:
        _drop_database(url, name)


_OPEN_AT = """
import sys, time
from mednas.study import make_storage
url, at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))  # all six open the storage at the same instant
make_storage(url)
"""


# Slow: six processes; issue 13's Done-when (three searches on a fresh database) stays fast above.
@pytest.mark.slow
@pytest.mark.postgres
def test_six_processes_create_the_schema_of_a_fresh_postgresql_database_at_once(tmp_path: Path) -> None:
    # Plain Optuna fails here with UniqueViolation "pg_type_typname_nsp_index" (measured: 2 of 3 repetitions).
    url = os.environ.get("MEDNAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MEDNAS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    try:
        fresh, name = _fresh_database(url)
    except Exception as exc:  # noqa: BLE001 - an older server set-up without CREATEDB
        pytest.skip(f"cannot create a database on {url.split('@')[-1]}: {type(exc).__name__}")
    try:
        at = str(time.time() + 4.0)
        results = _start_together([[sys.executable, "-c", _OPEN_AT, fresh, at] for _ in range(6)])
        for code, _out, err in results:
            assert code == 0 and "Traceback" not in err, err[-2000:]
    finally:
        _drop_database(url, name)
