"""``mednas search`` on the resolution ladder as a user runs it: SIGKILL mid-rung, then the same command (issue 17).

The retried trial (here the continuation of a paused trial, deferred promotion's default path) resumes the rung
that was killed from its epoch checkpoint; the rung it had passed is not trained again. The fast, in-process form of this is ``tests/study/test_ladder.py::test_a_killed_trial_resumes_its_rung...``.
"""

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
TOP_EPOCHS = 60


def _task_file(tmp_path: Path, datalist: Path) -> Path:
    ladder = {"rungs": [{"scale": 0.5, "epochs": 2}, {"scale": 1.0, "epochs": TOP_EPOCHS}], "eta": 2}
    task = tiny_task("classification", datalist, search={"fidelity": "ladder", "ladder": ladder})
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


# Slow (about 20 s: two `mednas search` processes and a kill).
@pytest.mark.slow
def test_sigkill_mid_rung_then_the_same_command_resumes_that_rung(
    tmp_path: Path, tiny_cls_datalist: Path
) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mednas", "--quiet", "search", str(_task_file(tmp_path, tiny_cls_datalist))]
    cmd += ["--n-trials", "1", "--run-dir", str(run)]
    env = dict(os.environ, MEDNAS_MALLOC_TUNING="0")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Deferred promotion: trial 0 pauses at the end of rung 0; once its rung is complete, trial 1 (its
    # continuation) takes over its weights and trains rung 1. The kill lands there.
    trial1 = run / "trials" / "1"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if (trial1 / "rung-1.ckpt").exists():  # rung 0 passed, rung 1 has trained an epoch
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the search did not reach rung 1 in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (trial1 / "rung-0.pt").exists() and (trial1 / "ladder.json").exists()
    assert not (trial1 / "metrics.json").exists()  # killed: nothing recorded it
    paused = json.loads((run / "trials" / "0" / "metrics.json").read_text())
    assert paused["state"] == "pruned" and paused["paused_at"] == 0

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads((run / "summary.json").read_text())
    counts = summary["n_trials"]
    assert counts["complete"] == 1 and counts["failed"] == 1 and counts["continuations"] == 2, counts
    assert json.loads((trial1 / "metrics.json").read_text())["state"] == "failed"
    rec = json.loads((run / "trials" / "2" / "metrics.json").read_text())
    assert rec["state"] == "complete" and rec["retry_of"] == 1
    resumed = rec["resumed_from"]
    assert resumed["trial"] == 1 and resumed["rung"] == 1 and 1 <= resumed["epoch"] < TOP_EPOCHS
    # No epoch twice, none missing: rung 0's two taken over, rung 1's from the checkpoint and from here.
    assert [h["epoch"] for h in rec["history"]] == list(range(1, 2 + TOP_EPOCHS + 1))
    assert [h["rung"] for h in rec["history"]] == [0, 0] + [1] * TOP_EPOCHS
    assert [r["epochs"] for r in rec["rungs"]] == [2, TOP_EPOCHS]
    # Rung 0 is trial 0's (its compute is in trial 0's record), taken over by trial 1, then by its retry.
    assert rec["rungs"][0]["continued_from"] == 0 and rec["rungs"][0]["resumed_from"] == 1
    assert rec["compute"]["voxel_epochs"] == rec["rungs"][1]["voxel_epochs"]
    assert (
        summary["compute"]["voxel_epochs"]
        == paused["compute"]["voxel_epochs"] + rec["compute"]["voxel_epochs"]
    )
    log = (run / "trials" / "2" / "log.txt").read_text()
    assert "rung 0 (" not in log  # the passed rung was not trained again
    trained_here = [line for line in log.splitlines() if "rung 1 (32x32) epoch " in line]
    assert len(trained_here) == TOP_EPOCHS - resumed["epoch"]
    assert f"epoch {resumed['epoch'] + 1}/{TOP_EPOCHS}:" in trained_here[0]
    for n in (0, 1, 2):  # the checkpoints went with the finished trial; its model.pt stays
        assert not [p for p in (run / "trials" / str(n)).iterdir() if p.name.startswith(("rung-", "ladder"))]
    assert (run / "trials" / "2" / "model.pt").exists()
