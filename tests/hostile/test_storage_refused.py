"""Storages that cannot be used are refused with one line, before anything is written, within a bounded time."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task
from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, mednas_subprocess, snapshot


@pytest.fixture
def task_file(tmp_path: Path, tiny_cls_datalist: Path) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(
        yaml.safe_dump(tiny_task("classification", tiny_cls_datalist, proxy={"shape": [16, 16], "epochs": 1}))
    )
    return path


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


# Slow set: it waits out the storage timeout (about 11 s); the shorter bounded-wait tests below stay in the fast set.
@pytest.mark.slow
def test_a_silent_postgresql_server_fails_within_15_s_and_leaves_no_run_dir(
    tmp_path: Path, task_file: Path, silent_server: int
) -> None:
    run = tmp_path / "run"
    url = f"postgresql://u:secret@127.0.0.1:{silent_server}/db"
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    out = mednas_subprocess(
        "search", task_file, "--run-dir", run, "--storage", url, "--n-trials", "1", timeout=60
    )
    took = time.monotonic() - t0
    line = assert_refused(out, f"127.0.0.1:{silent_server}", code=2)
    assert "secret" not in out.err and "secret" not in out.out
    assert took < 15, f"took {took:.1f}s"
    assert not run.exists()
    assert_unchanged(before, tmp_path)
    print(f"silent server refused after {took:.1f}s: {line}")


def test_storage_timeout_flag_and_url_parameter(tmp_path: Path, task_file: Path, silent_server: int) -> None:
    run = tmp_path / "run"
    for args in (("--storage-timeout", "2"), ()):
        url = f"postgresql://u:secret@127.0.0.1:{silent_server}/db" + ("" if args else "?connect_timeout=2")
        t0 = time.monotonic()
        out = mednas_cli("search", task_file, "--run-dir", run, "--storage", url, *args)
        took = time.monotonic() - t0
        assert_refused(out, f"127.0.0.1:{silent_server}", code=2)
        assert "secret" not in out.err
        assert 1.5 < took < 8, f"took {took:.1f}s"
        assert not run.exists()


def test_status_and_retrain_on_a_silent_server_are_bounded(tmp_path: Path, silent_server: int) -> None:
    from mednas.study import make_storage

    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        make_storage(f"postgresql://u:secret@127.0.0.1:{silent_server}/db", timeout=2)
    assert time.monotonic() - t0 < 8 and "secret" not in str(err.value)
    from mednas.reporting._status import _load_study

    os.environ["MEDNAS_STORAGE_TIMEOUT"] = "2"
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - status turns any storage failure into "read the records"
            _load_study(f"postgresql://u:secret@127.0.0.1:{silent_server}/db", "s")
        assert time.monotonic() - t0 < 8
    finally:
        del os.environ["MEDNAS_STORAGE_TIMEOUT"]


def test_a_refused_connection_names_the_host_not_the_password(tmp_path: Path, task_file: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here
    run = tmp_path / "run"
    out = mednas_cli(
        "search", task_file, "--run-dir", run, "--storage", f"postgresql://u:hunter2@127.0.0.1:{port}/db"
    )
    assert_refused(out, f"127.0.0.1:{port}", code=2)
    assert "hunter2" not in out.err
    assert not run.exists()


@pytest.mark.parametrize("url", ["ftp://example.org/study", "mongodb://u:pw@host/db", "redis://localhost"])
def test_a_storage_url_with_a_bad_scheme(tmp_path: Path, task_file: Path, url: str) -> None:
    run = tmp_path / "run"
    out = mednas_cli("search", task_file, "--run-dir", run, "--storage", url)
    line = assert_refused(out, "--storage", code=2)
    assert "pw@" not in line
    assert not run.exists()


def test_a_journal_file_in_an_unwritable_place(tmp_path: Path, task_file: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/mednas-nope/study.journal")  # even root cannot create folders here
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "sub" / "study.journal"
    run = tmp_path / "run"
    out = mednas_cli("search", task_file, "--run-dir", run, "--storage", f"journal:///{target}")
    assert_refused(out, str(target), code=2)
    assert not run.exists()


def test_a_sqlite_storage_that_is_not_a_database(tmp_path: Path, task_file: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    before = snapshot(tmp_path)
    run = tmp_path / "run"
    out = mednas_cli("search", task_file, "--run-dir", run, "--storage", f"sqlite:///{junk}")
    assert_refused(out, "--storage", code=2)
    assert not run.exists()
    assert_unchanged(before, tmp_path)
