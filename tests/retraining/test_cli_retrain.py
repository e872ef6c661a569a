"""``mednas retrain`` and ``mednas calibrate-proxy`` as a user runs them: printed tables, and SIGKILL mid-candidate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # Read at call time: the session fixture sets OMP_NUM_THREADS=1 and a private cache after this module loads.
    return dict(os.environ, MEDNAS_MALLOC_TUNING="0")


def _mednas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mednas", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=_env(),
    )


# Slow (15-20 s, a subprocess and a kill): resuming from the checkpoint is covered fast in-process by
# tests/retraining/test_retrain.py::test_interrupted_candidate_resumes_from_its_checkpoint.
@pytest.mark.slow
def test_sigkill_mid_candidate_resumes_that_candidate(searched_copy: Path) -> None:
    run = searched_copy
    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "--quiet",
        "retrain",
        str(run),
        "--top-k",
        "1",
        "--epochs",
        "20",
        "--seeds",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            logs = list(run.glob("retrain/*/log.txt"))
            if logs and "epoch 3/20" in logs[0].read_text():
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("retrain did not reach epoch 3 in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cdir = logs[0].parent
    assert (cdir / "checkpoint.pt").exists()
    assert json.loads((cdir / "metrics.json").read_text())["state"] == "running"
    killed_at = max(
        int(line.split("epoch ")[1].split("/")[0])
        for line in (cdir / "log.txt").read_text().splitlines()
        if " epoch " in f" {line}" and "/20:" in line
    )
    assert killed_at < 20

    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    log = (cdir / "log.txt").read_text()
    assert "resuming trial" in log
    assert log.count("epoch 1/20:") == 1  # not restarted: epoch 1 ran once, in the killed session
    rec = json.loads((cdir / "metrics.json").read_text())
    assert rec["state"] == "complete" and [h["epoch"] for h in rec["history"]] == list(range(1, 21))
    assert not (cdir / "checkpoint.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["retrain"]["candidates"] == [int(cdir.name)]
    assert "kendall_tau" in summary["proxy_fidelity"]
    assert "Kendall tau n/a" in again.stdout and "at least 3" in again.stdout  # k = 1: no rank correlation


# Slow: `mednas retrain` processes; retraining is covered in-process by tests/retraining/test_retrain.py.
@pytest.mark.slow
def test_retrain_prints_the_table(retrained: SimpleNamespace, tmp_path: Path) -> None:
    # A copy of a retrained run: every candidate is finished, so this measures the command, not training.
    run = shutil.copytree(retrained.run_dir, tmp_path / "run")
    proc = _mednas("--quiet", "retrain", str(run), "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "mednas retrain: tiny-cls" in out and "full fidelity: 32x32, up to 3 epochs" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("trial"))
    for col in ("family", "params", "proxy (val)", "full val (95% CI)", "test (95% CI)"):
        assert col in header
    assert out.count("95% CI ") >= 6  # validation and test intervals for each of three candidates
    assert "best at full fidelity: trial" in out and "proxy fidelity" in out and "0.73-0.84" not in out
    assert "seed-noise ceiling" in out and "not measured on this run" in out
    # The exported model's calibration and its operating point's warnings (five validation cases: too few).
    assert "calibration (validation): temperature" in out and "ECE" in out
    assert "WARNING: only" in out and "decided the threshold" in out


@pytest.mark.slow
def test_retrain_of_a_non_run_is_one_line(tmp_path: Path) -> None:
    proc = _mednas("retrain", str(tmp_path))
    assert proc.returncode == 4
    assert proc.stderr.strip().count("\n") == 0 and "not a mednas run directory" in proc.stderr


# The only test of issue 5's "calibrate-proxy prints a table of settings with tau and cost and a recommendation": it
# starts a process (11 s), so it runs in the slow set, which .ci/run runs.
@pytest.mark.slow
def test_calibrate_proxy_prints_settings_and_recommendation(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(tiny_task("classification", tiny_cls_datalist, training={"epochs": 2})))
    proc = _mednas(
        "--quiet",
        "calibrate-proxy",
        str(task),
        "--specs",
        "3",
        "--grid",
        "0.5x1",
        "--run-dir",
        str(tmp_path / "cal"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.strip().startswith("setting"))
    for col in ("shape", "epochs", "tau", "regret", "cost", "of full"):
        assert col in header
    assert "scale 0.5 x 1 ep" in out and "(task's proxy)" in out
    assert "recommended proxy" in out or "no setting" in out
    rec = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert len(rec["specs"]) == 3 and {r["setting"] for r in rec["settings"]} >= {"scale 0.5 x 1 ep"}
