"""Run directories are owned: `mednas search` never takes over a folder that is not a mednas run, and the steps
after it (retrain, export, report) never write into one."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task
from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot


@pytest.fixture
def task_file(tmp_path: Path, tiny_cls_datalist: Path) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(
        yaml.safe_dump(tiny_task("classification", tiny_cls_datalist, proxy={"shape": [16, 16], "epochs": 1}))
    )
    return path


def _user_folder(root: Path) -> Path:
    """A researcher's own folder: a summary.json of their own and their own SQLite database."""
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({"my": "results"}))
    con = sqlite3.connect(root / "study.db")
    con.execute("CREATE TABLE patients_scores (id INTEGER, score REAL)")
    con.execute("INSERT INTO patients_scores VALUES (1, 0.5)")
    con.commit()
    con.close()
    return root


def _tables(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        con.close()


def test_search_refuses_a_user_folder_with_a_summary_and_a_database(tmp_path: Path, task_file: Path) -> None:
    folder = _user_folder(tmp_path / "my-results")
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    out = mednas_cli("search", task_file, "--run-dir", folder, "--n-trials", "1")
    assert_refused(out, str(folder), "not a mednas run directory", code=4)
    assert time.monotonic() - t0 < 20
    assert_unchanged(before, tmp_path)
    assert _tables(folder / "study.db") == ["patients_scores"]


def test_search_refuses_a_run_dir_that_is_a_file(tmp_path: Path, task_file: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    before = snapshot(tmp_path)
    assert_refused(mednas_cli("search", task_file, "--run-dir", path), str(path), "is a file", code=4)
    assert_unchanged(before, tmp_path)


def test_search_refuses_a_system_like_folder_reached_by_dot_dots(tmp_path: Path, task_file: Path) -> None:
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "hosts.d").mkdir()
    cwd = tmp_path / "root" / "home" / "user" / "project"
    cwd.mkdir(parents=True)
    before = snapshot(tmp_path)
    out = mednas_cli("search", task_file, "--run-dir", "../../../etc", cwd=cwd)
    assert_refused(out, "../../../etc", code=4)
    assert_unchanged(before, tmp_path)
    assert sorted(p.name for p in etc.iterdir()) == ["hosts.d", "passwd"]


def test_search_refuses_a_folder_holding_only_a_user_study_db(tmp_path: Path, task_file: Path) -> None:
    folder = tmp_path / "db-only"
    folder.mkdir()
    con = sqlite3.connect(folder / "study.db")
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.commit()
    con.close()
    before = snapshot(tmp_path)
    assert_refused(mednas_cli("search", task_file, "--run-dir", folder), str(folder), code=4)
    assert_unchanged(before, tmp_path)
    assert _tables(folder / "study.db") == ["mine"]


def test_retrain_export_report_refuse_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path / "my-results")
    before = snapshot(tmp_path)
    for args in (("retrain", folder), ("export", folder), ("report", folder)):
        assert_refused(mednas_cli(*args), str(folder), code=4)
    assert_unchanged(before, tmp_path)


def test_search_marks_a_new_run_and_continues_it(tmp_path: Path, task_file: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    t0 = time.monotonic()
    out = mednas_cli("--quiet", "search", task_file, "--run-dir", run, "--n-trials", "1")
    assert out.code == 0, out.err
    marker = json.loads((run / ".mednas-run").read_text())
    assert set(marker) >= {"mednas", "created", "config_hash"}
    assert marker["config_hash"] == json.loads((run / "env.json").read_text())["config_hash"]
    assert (run / ".salt").stat().st_mode & 0o077 == 0
    again = mednas_cli("--quiet", "search", task_file, "--run-dir", run, "--n-trials", "2")
    assert again.code == 0, again.err
    assert (
        json.loads((run / "summary.json").read_text())["n_trials"]["complete"]
        + json.loads((run / "summary.json").read_text())["n_trials"]["pruned"]
        >= 2
    )
    assert json.loads((run / ".mednas-run").read_text()) == marker  # the marker is never rewritten
    print(f"two short searches: {time.monotonic() - t0:.1f}s")


def test_a_run_of_an_earlier_version_is_adopted_with_a_log_line(tmp_path: Path, task_file: Path) -> None:
    run = tmp_path / "old-run"
    assert mednas_cli("--quiet", "search", task_file, "--run-dir", run, "--n-trials", "1").code == 0
    (run / ".mednas-run").unlink()  # what earlier versions left: resolved.yaml, env.json, .salt, study.db
    out = mednas_cli("search", task_file, "--run-dir", run, "--n-trials", "1")
    assert out.code == 0, out.err
    assert (run / ".mednas-run").is_file() and json.loads((run / ".mednas-run").read_text())[
        "adopted"
    ] is True
    assert "earlier mednas version" in out.err


def test_a_run_of_another_configuration_is_refused(
    tmp_path: Path, task_file: Path, tiny_cls_datalist: Path
) -> None:
    run = tmp_path / "run"
    assert mednas_cli("--quiet", "search", task_file, "--run-dir", run, "--n-trials", "1").code == 0
    other = tmp_path / "other.yaml"
    other.write_text(
        yaml.safe_dump(tiny_task("classification", tiny_cls_datalist, proxy={"shape": [16, 16], "epochs": 2}))
    )
    before = snapshot(run)
    assert_refused(mednas_cli("search", other, "--run-dir", run), str(run), "different configuration", code=4)
    assert_unchanged(before, run)


def test_a_refused_start_removes_only_what_it_created(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    # Data that fails after the run directory was made: the new run directory (and the parents this start
    # made) disappear; an empty folder the user made stays.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": str(tmp_path / "missing.png"), "label": 0}] * 12}))
    task = tmp_path / "bad.yaml"
    task.write_text(yaml.safe_dump(tiny_task("classification", bad)))
    run = tmp_path / "new" / "run"
    out = mednas_cli("search", task, "--run-dir", run)
    assert out.code != 0 and "Traceback" not in out.err
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mednas_cli("search", task, "--run-dir", empty).code != 0
    assert empty.is_dir() and list(empty.iterdir()) == []
