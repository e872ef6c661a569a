"""CPU threads: usable CPUs from the affinity mask and cgroup quota, a lower default on a busy machine, --threads."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mednas import _threads
from mednas._threads import (
    ThreadPlan,
    busy_cpus,
    cgroup_cpu_limit,
    configure_threads,
    plan_threads,
    usable_cpus,
)
from mednas.testing import tiny_task

ROOT = Path(__file__).resolve().parents[1]
_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MEDNAS_TORCH_THREADS",
    "MEDNAS_THREADS",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No thread variables set (restored afterwards, also those apply_threads writes); no earlier plan."""
    for var in _VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_threads, "_OWN_ENV", {})
    monkeypatch.setattr(_threads, "_LAST", None)
    return monkeypatch


def _cgroup_v2(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(_cgroup_v2(tmp_path, "150000 100000\n")) == 1.5
    assert cgroup_cpu_limit(_cgroup_v2(tmp_path, "max 100000\n")) is None


def test_cgroup_quota_of_the_process_own_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_own_cgroups", lambda: {"": "/system.slice/job.scope", "cpu": "/job"})
    (tmp_path / "system.slice" / "job.scope").mkdir(parents=True)
    (tmp_path / "system.slice" / "job.scope" / "cpu.max").write_text("300000 100000\n")
    _cgroup_v2(tmp_path, "max 100000\n")  # the root has no limit; the job's own group has 3 CPUs
    assert cgroup_cpu_limit(tmp_path) == 3.0


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_limit(tmp_path) == 3.0
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_usable_cpus_is_affinity_capped_by_quota_not_cpu_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert usable_cpus(cgroup_root=tmp_path) == 6  # no quota file: the affinity mask
    assert usable_cpus(cgroup_root=_cgroup_v2(tmp_path, "200000 100000")) == 2  # a 2-CPU container
    assert (
        usable_cpus(cgroup_root=_cgroup_v2(tmp_path, "50000 100000")) == 1
    )  # half a CPU still gets one thread
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)  # taskset -c 3
    assert usable_cpus(cgroup_root=_cgroup_v2(tmp_path, "max 100000")) == 1


def test_default_is_usable_cpus_divided_by_workers(clean_env: pytest.MonkeyPatch) -> None:
    assert plan_threads(usable=8, busy=0.2) == ThreadPlan(8, "auto", 8, 1, 0.2, False)
    assert plan_threads(usable=8, busy=0.0, workers=3).threads == 2
    assert plan_threads(usable=2, busy=0.0, workers=4).threads == 1


def test_busy_machine_lowers_the_default(clean_env: pytest.MonkeyPatch) -> None:
    plan = plan_threads(usable=2, busy=2.1)  # one CPU-bound job on both cores
    assert (plan.threads, plan.reduced) == (1, True)
    assert plan_threads(usable=8, busy=3.0).threads == 5
    assert plan_threads(usable=8, busy=3.0, workers=2).threads == 2
    assert plan_threads(usable=8, busy=30.0).threads == 1
    # What the user or the task asks for is never lowered.
    assert plan_threads(2, usable=2, busy=4.0) == ThreadPlan(2, "option", 2, 1)
    assert plan_threads(task_threads=2, usable=2, busy=4.0).source == "task"


def test_busy_is_the_lower_of_load_average_and_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    monkeypatch.setattr(_threads, "_sampled_busy", lambda window: 0.1)
    assert busy_cpus() == 0.1  # a search that just ended still holds the load average up
    monkeypatch.setattr(_threads, "_sampled_busy", lambda window: 1.9)
    assert busy_cpus() == 1.9
    monkeypatch.setattr(_threads, "_sampled_busy", lambda window: None)
    assert busy_cpus() == 2.0


def test_busy_machine_is_logged_once_with_the_override(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    clean_env.setattr(_threads, "usable_cpus", lambda: 2)
    clean_env.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    clean_env.setattr(_threads, "_sampled_busy", lambda window: 2.0)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="mednas"):
            plan = configure_threads()
        assert plan.threads == 1 and plan.reduced
        lines = [r.getMessage() for r in caplog.records if r.name == "mednas"]
        assert len(lines) == 1 and "busy" in lines[0] and "--threads N" in lines[0], lines
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
        # What this process set itself is no user's choice: a later plan measures again.
        clean_env.setattr(_threads, "_sampled_busy", lambda window: 0.0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mednas"):
            assert configure_threads() == ThreadPlan(2, "auto", 2, 1, 0.0, False)
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    finally:
        torch.set_num_threads(before)


def test_environment_and_parent_choices_are_kept(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert plan_threads(usable=8, busy=7.0) == ThreadPlan(3, "environment", 8, 1)
    clean_env.setenv("MEDNAS_TORCH_THREADS", "2")  # set by the mednas that started this worker
    assert plan_threads(usable=8, busy=0.0).source == "parent"
    clean_env.setenv("MEDNAS_THREADS", "torch")  # torch's own default, for benchmarks
    assert plan_threads(usable=8).source == "torch"
    with pytest.raises(ValueError, match="at least 1"):
        plan_threads(0)


def test_workers_share_the_cpus(clean_env: pytest.MonkeyPatch) -> None:
    from mednas.study._workers import plan_slots

    clean_env.setattr(_threads, "usable_cpus", lambda: 8)
    clean_env.setattr(_threads, "busy_cpus", lambda: 0.0)
    slots = plan_slots(4, None, 1, "cpu")
    assert [s.env["OMP_NUM_THREADS"] for s in slots] == ["2"] * 4
    assert slots[0].env["MEDNAS_TORCH_THREADS"] == slots[0].env["MKL_NUM_THREADS"] == "2"
    gpu = plan_slots(1, [0, 1], 2, "auto")
    assert [s.env["OMP_NUM_THREADS"] for s in gpu] == ["2"] * 4 and gpu[3].env["CUDA_VISIBLE_DEVICES"] == "1"
    assert plan_slots(4, None, 1, "cpu", threads=3)[0].env["OMP_NUM_THREADS"] == "3"


def test_training_threads_is_validated_and_not_part_of_the_run_identity(tiny_cls_datalist: Path) -> None:
    from mednas.config import config_hash, load_task
    from mednas.errors import ConfigError

    base = tiny_task("classification", tiny_cls_datalist)
    with pytest.raises(ConfigError, match=r"training\.threads"):
        load_task(base | {"training": {**base["training"], "threads": 0}})
    two = load_task(base | {"training": {**base["training"], "threads": 2}})
    assert two.training.threads == 2
    assert config_hash(two) == config_hash(load_task(base))


@pytest.mark.slow  # a `mednas search` process (7 s); the option's parsing is covered fast below
def test_threads_option_reaches_torch_and_env_json(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(tiny_task("classification", tiny_cls_datalist, search={"n_trials": 1})))
    env = {k: v for k, v in os.environ.items() if k not in _VARS} | {"MEDNAS_MALLOC_TUNING": "0"}
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mednas",
            "--quiet",
            "search",
            str(task),
            "--run-dir",
            str(run),
            "--n-trials",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    threads = json.loads((run / "env.json").read_text())["threads"]
    assert threads["torch"] == 1 and threads["interop"] == 1 and threads["OMP_NUM_THREADS"] == "1"
    assert threads["plan"]["source"] == "option"


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "t.yaml"],
        ["retrain", "run"],
        ["calibrate-proxy", "t.yaml"],
        ["export", "run"],
        ["predict", "bundle", "x.png", "--out", "o"],
        ["evaluate", "bundle", "d.yaml", "--out", "o"],
        ["report", "run"],
    ],
)
def test_every_training_or_predicting_command_takes_threads(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mednas.cli import _build_parser

    parser = _build_parser()
    assert parser.parse_args([*argv, "--threads", "3"]).threads == 3
    assert parser.parse_args(argv).threads is None
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*argv, "--threads", "0"])
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err
