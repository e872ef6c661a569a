"""The ``mednas`` command: instant help, one-line errors with exit codes, search output, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mednas", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=dict(os.environ, MEDNAS_MALLOC_TUNING="0"),
    )


# Slow: each of the next three starts `python -m mednas` (about 2 s of imports); their one-line errors and listings
# are covered in-process by tests/hostile and tests/data/test_validate.py.
@pytest.mark.slow
def test_help_is_instant() -> None:
    t0 = time.perf_counter()
    proc = _run("--help")
    assert proc.returncode == 0 and "search" in proc.stdout
    assert time.perf_counter() - t0 < 5.0
    code = (
        "import sys, mednas.cli; sys.exit(int(any(m in sys.modules for m in ('torch', 'monai', 'optuna'))))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_bad_key_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _run(
        "search",
        "tasks/demo-xray-nodule.yaml",
        "--set",
        "search.n_trails=3",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "search.n_trails: unknown key (did you mean 'n_trials'?)" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing half-written


@pytest.mark.slow  # 14 s building the demo MRI; `mednas validate` runs fast in tests/data/test_validate.py
def test_validate_task_file() -> None:
    proc = _run("validate", "tasks/demo-mri-lesion.yaml")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_spaces_lists_families() -> None:
    proc = _run("spaces")
    assert proc.returncode == 0
    for name in ("resnet", "efficientnet", "densenet", "dynunet", "segresnet", "unet"):
        assert name in proc.stdout


def _task_file(tmp_path: Path, datalist: Path, **overrides) -> Path:  # noqa: ANN003
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(tiny_task("classification", datalist, **overrides)))
    return path


# The only test of issue 2's "prints the best architecture, its objective and its validation figures" as a user runs
# the command: it starts a process (12 s), so it runs in the slow set, which .ci/run runs.
@pytest.mark.slow
def test_search_prints_best(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = _task_file(tmp_path, tiny_cls_datalist)
    proc = _run("search", str(task), "--n-trials", "2", "--run-dir", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "best: trial" in proc.stdout and "monai.networks.nets." in proc.stdout
    assert "sensitivity_at_specificity" in proc.stdout and "95% CI" in proc.stdout


# Slow (21 s, two processes and a kill): the kill's recovery is covered fast by tests/scaleout/test_recovery.py
# (a dead local worker's trial is failed and retried at once) and the search command by test_search_prints_best.
@pytest.mark.slow
def test_sigkill_mid_trial_loses_no_completed_trial(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    # Long enough trials that the kill lands inside one.
    task = _task_file(
        tmp_path,
        tiny_cls_datalist,
        proxy={"shape": [16, 16], "epochs": 40},
        search={"pruner": {"name": "none"}},
    )
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "--quiet",
        "search",
        str(task),
        "--n-trials",
        "3",
        "--run-dir",
        str(run),
    ]
    env = dict(os.environ, MEDNAS_MALLOC_TUNING="0")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            done = run / "trials" / "0" / "metrics.json"
            running = run / "trials" / "1" / "log.txt"
            if (
                done.exists()
                and json.loads(done.read_text()).get("state") in ("complete", "pruned")
                and running.exists()
                and "epoch 2/" in running.read_text()
            ):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("search did not reach trial 1 in time")
        first = (run / "trials" / "0" / "metrics.json").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads((run / "summary.json").read_text())
    n = summary["n_trials"]
    assert n["complete"] + n["pruned"] == 3 and n["running"] == 0
    assert n["failed"] == 1  # the killed trial
    assert (
        run / "trials" / "0" / "metrics.json"
    ).read_text() == first  # the completed trial survived untouched
    killed = (
        json.loads((run / "trials" / "1" / "metrics.json").read_text())
        if (run / "trials" / "1" / "metrics.json").exists()
        else {}
    )
    assert killed.get("state") != "complete"
    retried = [json.loads(p.read_text()) for p in run.glob("trials/*/metrics.json")]
    assert any(r.get("retry_of") == 1 for r in retried)  # the killed trial was retried with its parameters
