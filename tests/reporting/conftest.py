"""Runs the report and status tests share: one tiny classification search watched live, one tiny segmentation search.

The classification search runs in a subprocess (``mednas --log-json search``) while this process polls
``mednas status`` in-process, the way a user watches a search from a second terminal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[2]
#: Proxy epochs of the live search: enough that a poll every 0.3 s sees a trial running with an epoch reported
#: (a tiny epoch takes well under 0.1 s once the framework's per-trial overhead is small).
LIVE_EPOCHS = 12  # long enough for a poll to catch a running trial with an epoch, also on a busy machine


@dataclass
class LiveRun:
    """A finished tiny search and what was seen while it ran."""

    run_dir: Path
    returncode: int
    stderr: str
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # read_status() while the process was alive
    texts: list[str] = field(default_factory=list)  # `mednas status` output while the process was alive


def _status_cli(run_dir: Path, *extra: str) -> str:
    """Run ``mednas status`` in-process (the same argparse and code path as the command) and return stdout."""
    from mednas.cli import main

    root = logging.getLogger("mednas")
    saved = (list(root.handlers), root.level, root.propagate)
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            code = main(["status", str(run_dir), *extra])
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    assert code == 0
    return buf.getvalue()


@pytest.fixture(scope="session")
def live_cls_run(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path) -> LiveRun:
    """Run a 3-trial search in another process and poll its status until it ends."""
    from mednas.reporting import read_status

    base = tmp_path_factory.mktemp("live-cls")
    task = base / "task.yaml"
    # No pruning, so every trial runs all its epochs and a poll sees it running; fewer bootstrap resamples: faster.
    spec = tiny_task(
        "classification",
        tiny_cls_datalist,
        proxy={"shape": [16, 16], "epochs": LIVE_EPOCHS},
        search={"pruner": {"name": "none"}},
        objective={
            "metric": "sensitivity_at_specificity",
            "min_specificity": 0.8,
            "bootstrap": {"resamples": 100},
        },
    )
    task.write_text(yaml.safe_dump(spec))
    run = base / "run"
    env = dict(os.environ, MEDNAS_MALLOC_TUNING="0", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "--log-json",
        "search",
        str(task),
        "--n-trials",
        "3",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = LiveRun(run, -1, "")
    deadline = time.monotonic() + 400
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            if not (run / "study.db").exists() or not (run / "summary.json").exists():
                continue
            snap = read_status(run)
            if proc.poll() is None:
                live.snapshots.append(snap)
            # The command itself, once a trial has finished and another is running: the live case users watch.
            # (Once the running trial has reported an epoch, so the text can show it: epochs only go up.)
            if (
                snap["finished"] >= 1
                and snap["counts"]["running"]
                and len(live.texts) < 5
                and any(r["state"] == "running" and r.get("epoch") for r in snap["trials"])
            ):
                text = _status_cli(run)
                if proc.poll() is None:
                    live.texts.append(text)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    live.returncode, live.stderr = proc.returncode, err
    assert proc.returncode == 0, err[-3000:]
    return live


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory: pytest.TempPathFactory, tiny_seg_datalist: Path) -> Path:
    """A one-trial 3D segmentation search (weights and predictions kept)."""
    from mednas import api

    run = tmp_path_factory.mktemp("seg") / "run"
    api.search(tiny_task("segmentation", tiny_seg_datalist), run_dir=run, n_trials=1, show_progress=False)
    return run


def read_meta(html_text: str) -> dict[str, Any]:
    """The report's embedded JSON manifest (figures, notes, errors)."""
    start = html_text.index('<script type="application/json" id="mednas-report-meta">') + len(
        '<script type="application/json" id="mednas-report-meta">'
    )
    return json.loads(html_text[start : html_text.index("</script>", start)])


@pytest.fixture(scope="session")
def cls_report(live_cls_run: LiveRun, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The report of the live classification run (written once, read by several tests)."""
    from mednas.reporting import write_report

    return write_report(live_cls_run.run_dir, tmp_path_factory.mktemp("cls-report") / "report.html")


@pytest.fixture(scope="session")
def seg_report(seg_run: Path) -> Any:
    """The report of the segmentation run, in its run directory."""
    from mednas.reporting import write_report

    return write_report(seg_run)
