"""Records that match what ran: ``resolved.yaml`` holds the command line's settings, ``summary.json`` how the session
ended, ``mednas status`` says so; a shipped preset is found by name from a folder outside the repository."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mednas import api
from mednas.reporting import format_status, read_status
from mednas.testing import tiny_task


def _cli(*argv: str) -> tuple[int, str]:
    """Run ``mednas`` in-process (the command's own argparse and code path); return the status and stdout."""
    from mednas.cli import main

    root = logging.getLogger("mednas")
    saved = (list(root.handlers), root.level, root.propagate)
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            code = main(list(argv))
    finally:
        root.handlers[:], root.level, root.propagate = saved
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path) -> SimpleNamespace:
    """`mednas search TASK --preset quick-cpu --n-trials 4 --timeout 2` run from a folder outside the repository.

    The task asks for 3 trials and no timeout, the preset for 10: the command line wins. Trials of 20 epochs take
    about a second (more on a busy machine), so the session ends on its timeout with 1 to 3 of 4 finished.
    """
    base = tmp_path_factory.mktemp("outside")
    task = base / "task.yaml"
    spec = tiny_task(
        "classification",
        tiny_cls_datalist,
        search={"pruner": {"name": "none"}},
        proxy={"shape": [16, 16], "epochs": 20},
        objective={
            "metric": "sensitivity_at_specificity",
            "min_specificity": 0.8,
            "bootstrap": {"resamples": 100},
        },
    )
    task.write_text(yaml.safe_dump(spec))
    run = base / "run"
    old = Path.cwd()
    os.chdir(base)
    try:
        code, out = _cli(
            "search",
            "task.yaml",
            "--preset",
            "quick-cpu",
            "--n-trials",
            "4",
            "--timeout",
            "2",
            "--device",
            "cpu",
            "--run-dir",
            "run",
        )
    finally:
        os.chdir(old)
    assert code == 0, out
    return SimpleNamespace(task=task, run=run, out=out)


def test_a_shipped_preset_is_found_by_name_outside_the_repository(timed_out: SimpleNamespace) -> None:
    pruner = yaml.safe_load((timed_out.run / "resolved.yaml").read_text())["search"]["pruner"]
    assert pruner["startup_trials"] == 3  # from quick-cpu (the default is 4)
    assert pruner["name"] == "none"  # the task's own key wins over the preset's


def test_resolved_yaml_records_the_command_line(timed_out: SimpleNamespace) -> None:
    resolved = yaml.safe_load((timed_out.run / "resolved.yaml").read_text())
    assert resolved["search"]["n_trials"] == 4  # not the task's 3 nor the preset's 10
    assert resolved["search"]["timeout"] == 2.0
    assert resolved["device"] == "cpu"


def test_a_search_stopped_by_its_timeout_says_so_and_shows_no_time_left(timed_out: SimpleNamespace) -> None:
    summary = json.loads((timed_out.run / "summary.json").read_text())
    assert summary["stopped"]["reason"] == "timeout reached" and summary["stopped"]["at"]
    status = read_status(timed_out.run)
    assert 1 <= status["finished"] < 4 and status["target"] == 4
    assert status["running"] is False and status["remaining_s"] is None
    assert status["stopped"]["reason"] == "timeout reached"
    text = format_status(status)
    assert "search: stopped (timeout reached" in text
    assert " left" not in text, text  # before: "~23m50s left" after the search had stopped
    code, out = _cli("status", str(timed_out.run))
    assert code == 0 and "stopped (timeout reached" in out


def test_continuing_with_another_n_trials_keeps_the_study_and_updates_the_record(
    timed_out: SimpleNamespace,
) -> None:
    target = read_status(timed_out.run)["finished"] + 1  # one more trial
    result = api.search(
        timed_out.task, presets=["quick-cpu"], run_dir=timed_out.run, n_trials=target, show_progress=False
    )
    resolved = yaml.safe_load((timed_out.run / "resolved.yaml").read_text())
    assert resolved["search"]["n_trials"] == target and resolved["search"]["timeout"] is None
    assert result.summary["stopped"]["reason"] == "n_trials reached"
    n = result.summary["n_trials"]
    assert n["complete"] + n["pruned"] + n["infeasible"] == target
    text = format_status(read_status(timed_out.run))
    assert (
        f"{target}/{target} finished" in text
        and "search: stopped (n_trials reached" in text
        and " left" not in text
    )


def _search_until_first_trial(
    monkeypatch: pytest.MonkeyPatch, run: Path, task: dict, interrupt
) -> BaseException:  # noqa: ANN001
    import mednas.study._runner as runner

    monkeypatch.setattr(runner._TrialObjective, "__call__", lambda self, trial: interrupt(trial))
    with pytest.raises(BaseException) as info:  # noqa: PT011 - KeyboardInterrupt or SystemExit, checked below
        api.search(task, run_dir=run, show_progress=False)
    return info.value


def test_an_interrupted_search_records_it(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = tiny_task("classification", tiny_cls_datalist)

    def ctrl_c(trial):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    exc = _search_until_first_trial(monkeypatch, tmp_path / "a", task, ctrl_c)
    assert isinstance(exc, KeyboardInterrupt)
    stopped = json.loads((tmp_path / "a" / "summary.json").read_text())["stopped"]
    assert stopped["reason"] == "interrupted"
    assert "search: stopped (interrupted" in format_status(read_status(tmp_path / "a"))

    from mednas.study._recovery import host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def sigterm(trial):  # noqa: ANN001, ANN202
        # As the real objective records its worker; this process outlives the search, so name one that has exited.
        trial.set_user_attr("host", host_tag())
        trial.set_user_attr("pid", gone.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the search")

    exc = _search_until_first_trial(monkeypatch, tmp_path / "b", task, sigterm)
    assert isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    status = read_status(tmp_path / "b")
    assert status["stopped"]["reason"] == "interrupted" and "SIGTERM" in status["stopped"]["detail"]
    # The trial it was running stays RUNNING in the storage (retried when the search continues); nothing works on it.
    assert status["running"] is False and status["counts"]["running"] == 1
    assert [r["lost"] for r in status["trials"] if r["state"] == "running"] == [True]
