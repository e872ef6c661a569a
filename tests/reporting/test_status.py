"""``mednas status`` shows live numbers of a search running in another process; ``--log-json`` logs JSON lines."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mednas.errors import RunDirError
from mednas.reporting import format_status, read_status
from tests.reporting.conftest import LIVE_EPOCHS, LiveRun, _status_cli


def test_status_shows_live_numbers_while_a_search_runs(live_cls_run: LiveRun) -> None:
    snaps = live_cls_run.snapshots
    assert snaps, "no status was read while the search ran"
    running = [s for s in snaps if s["counts"]["running"]]
    assert running, "no snapshot saw a running trial"
    # A running trial reports its epoch from the storage before its record exists.
    assert any(r["state"] == "running" and r["epoch"] for s in running for r in s["trials"])
    mid = [s for s in snaps if 1 <= s["finished"] < 3]
    assert mid, "no snapshot was taken between the first and the last trial"
    assert all(s["best"] is not None for s in mid)
    assert all(s["target"] == 3 for s in snaps)
    finished = [s["finished"] for s in snaps]
    assert finished == sorted(finished), "the finished count went backwards"
    # The command itself, while the search ran: a running row and the best so far.
    assert live_cls_run.texts, "mednas status never ran while a trial was running"
    live = [t for t in live_cls_run.texts if re.search(r"^\s+\d+\s+running\s", t, re.M)]
    assert live, live_cls_run.texts  # a table row of the running trial, with its epoch
    assert "best so far: trial" in live[0] and re.search(r"[12]/3 finished", live[0])
    assert any(re.search(rf"^\s+\d+\s+running\s.*\s\d+/{LIVE_EPOCHS}\s", t, re.M) for t in live), (
        live
    )  # its epoch, live
    # While a trial runs, the search is running (its worker is alive) and no stop is reported.
    assert all(s["running"] and s["stopped"] is None for s in running)
    assert all("search: running" in t and "stopped" not in t for t in live)


def test_status_after_the_search(live_cls_run: LiveRun) -> None:
    status = read_status(live_cls_run.run_dir)
    c = status["counts"]
    assert c["complete"] + c["pruned"] + c["infeasible"] == 3 and c["running"] == 0
    assert status["source"] == "storage" and status["remaining_s"] is None
    assert status["running"] is False and status["stopped"]["reason"] == "n_trials reached"
    best = status["best"]
    rows = {r["number"]: r for r in status["trials"]}
    assert rows[best["trial"]]["state"] == "complete"
    assert rows[best["trial"]]["objective"] == pytest.approx(best["values"][0])
    for row in status["trials"]:
        assert row["sampled"] and "family" in row["sampled"]  # Optuna's parameters, from the storage
        if row["state"] == "complete":
            assert row["params"] > 0 and row["epoch"] == row["epochs"] == LIVE_EPOCHS and row["seconds"] > 0
    text = format_status(status)
    assert "3/3 finished" in text and f"best so far: trial {best['trial']}" in text
    assert "search: stopped (n_trials reached" in text and " left" not in text
    out = json.loads(_status_cli(live_cls_run.run_dir, "--json"))
    assert out["counts"] == c and out["best"]["trial"] == best["trial"]


def test_status_without_storage_reads_the_records(live_cls_run: LiveRun, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, copy)
    (copy / "study.db").unlink()
    status = read_status(copy)
    assert status["source"] == "records" and status["storage"] is None
    assert status["counts"] == read_status(live_cls_run.run_dir)["counts"]
    bad = read_status(copy, storage="postgresql://me:secret@127.0.0.1:1/nowhere")
    assert bad["source"] == "records" and bad["storage_error"]
    assert "secret" not in format_status(bad) and "me:***@" in format_status(bad)


#: Trial attributes the search keeps only in the trial's record, not in the storage (issue 16).
RECORD_ONLY_ATTRS = ("family", "params", "macs", "latency_ms", "threshold", "not_learning", "fail_reason")


def strip_record_only_attrs(run: Path) -> None:
    """Remove from a copied run's storage what only the trial records keep (as a search of this version writes)."""
    with contextlib.closing(sqlite3.connect(run / "study.db")) as db:
        marks = ", ".join("?" * len(RECORD_ONLY_ATTRS))
        db.execute(f"DELETE FROM trial_user_attributes WHERE key IN ({marks})", RECORD_ONLY_ATTRS)
        db.commit()


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("run_dir", "storage", "updated")}


def test_status_takes_what_a_trial_did_from_its_record(live_cls_run: LiveRun, tmp_path: Path) -> None:
    # The storage is read for the live state; family, parameters, reasons and flags come from the records.
    copy = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, copy)
    strip_record_only_attrs(copy)
    status = read_status(copy)
    assert status["source"] == "storage"
    assert _comparable(status) == _comparable(read_status(live_cls_run.run_dir))
    text = format_status(status)
    assert all(f"{r['params']:,}" in text for r in status["trials"] if r["state"] == "complete")


def test_status_of_a_trial_without_a_record_shows_the_storage(live_cls_run: LiveRun, tmp_path: Path) -> None:
    # A trial recorded in another machine's run directory: what the storage has, nothing invented.
    copy = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, copy)
    strip_record_only_attrs(copy)
    before = {r["number"]: r for r in read_status(copy)["trials"]}
    number = next(n for n, r in before.items() if r["state"] == "complete")
    (copy / "trials" / str(number) / "metrics.json").unlink()
    row = next(r for r in read_status(copy)["trials"] if r["number"] == number)
    assert row["state"] == "complete" and row["objective"] == pytest.approx(before[number]["objective"])
    assert row["family"] == row["sampled"]["family"] == before[number]["family"]
    assert row["params"] is None and row["ci95"] is None and row["epochs"] == LIVE_EPOCHS
    assert row["seconds"] > 0  # the storage's clock
    assert re.search(rf"^\s+{number}\s+complete\s", format_status(read_status(copy)), re.M)


def test_status_of_a_killed_search_says_it_is_not_running(live_cls_run: LiveRun, tmp_path: Path) -> None:
    # A search killed with SIGKILL records nothing: no process holds the run and no stop is recorded.
    copy = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    del summary["stopped"]
    summary["n_trials"]["target"] = 5
    (copy / "summary.json").write_text(json.dumps(summary))
    status = read_status(copy)
    assert (
        status["running"] is False
        and status["stopped"]["reason"] == "unknown"
        and status["remaining_s"] is None
    )
    text = format_status(status)
    assert "3/5 finished" in text and "search: stopped (how is not recorded: killed or crashed?)" in text
    assert " left" not in text


def test_status_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a run directory"):
        read_status(tmp_path)


def test_log_json_lines_carry_trial_fields(live_cls_run: LiveRun) -> None:
    lines = [json.loads(line) for line in live_cls_run.stderr.splitlines() if line.strip()]
    assert lines, "no log lines"
    for rec in lines:
        assert {"time", "level", "logger", "message"} <= set(rec)
    trials = [r for r in lines if r.get("event") == "trial"]
    assert len(trials) == 3
    assert [r["finished"] for r in trials] == [1, 2, 3] and all(r["total"] == 3 for r in trials)
    assert all(
        r["state"] in ("complete", "pruned", "infeasible", "failed") and "elapsed_s" in r for r in trials
    )
    assert trials[-1]["remaining_s"] == 0.0 and trials[-1]["best"] is not None
    assert any(r["state"] == "complete" and isinstance(r["value"], float) for r in trials)


def test_json_formatter_keeps_structured_fields() -> None:
    from mednas._logging import JsonFormatter

    record = logging.LogRecord(
        "mednas.study", logging.WARNING, __file__, 1, "epoch %d of trial %d", (2, 5), None
    )
    record.trial, record.epoch, record.value = 5, 2, float("nan")
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "epoch 2 of trial 5" and line["level"] == "WARNING"
    assert line["trial"] == 5 and line["epoch"] == 2 and line["value"] is None  # NaN is not JSON
    assert line["time"][:4].isdigit() and "T" in line["time"]
