"""Local worker processes: ``--workers N`` on CPUs, ``--gpus 0,1 --trials-per-gpu K`` on GPUs.

Each worker is an ordinary ``mednas search`` process on the same run directory and study (Optuna's storage
coordinates them; there is no scheduler here). The parent prepares the data plan and proxy cache first, so
workers only read them. CPU workers split the cores between them; GPU workers see one GPU each
(``CUDA_VISIBLE_DEVICES``), K of them per GPU so that small proxy trials share a card.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mednas._malloc import MALLOC_ENV
from mednas._threads import plan_threads, thread_env
from mednas.errors import ConfigError

logger = logging.getLogger("mednas.study")

__all__ = ["WorkerSlot", "plan_slots", "spawn_workers", "stop_workers"]


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker runs: an index, its device, and its environment additions."""

    index: int
    device: str
    env: dict[str, str]


def plan_slots(
    workers: int,
    gpus: list[int] | None,
    trials_per_gpu: int,
    device: str,
    *,
    threads: int | None = None,
    task_threads: int | None = None,
) -> list[WorkerSlot]:
    """Assign worker slots: slot 0 is the parent process itself.

    Every slot gets the same CPU threads (:func:`mednas._threads.plan_threads`): ``threads`` or ``task_threads``
    per process when given, else the usable CPUs divided by the slots (fewer on a busy machine).

    Args:
        workers: Worker processes on the CPU (or on the default device) when ``gpus`` is empty.
        gpus: GPU indices to pack trials onto.
        trials_per_gpu: Concurrent trials per listed GPU.
        device: The device the task asked for (``auto``, ``cpu``, ``cuda``).
        threads: ``--threads``: CPU threads per process.
        task_threads: The task's ``training.threads``.

    Raises:
        ConfigError: For contradictory options.
    """
    if gpus:
        if device == "cpu":
            raise ConfigError("--gpus needs a CUDA device, but --device cpu was given")
        if trials_per_gpu < 1:
            raise ConfigError("--trials-per-gpu must be at least 1")
        env = thread_env(
            plan_threads(threads, task_threads=task_threads, workers=len(gpus) * trials_per_gpu).threads
        )
        slots = []
        for g in gpus:
            for _ in range(trials_per_gpu):
                slots.append(WorkerSlot(len(slots), "cuda", {**env, "CUDA_VISIBLE_DEVICES": str(g)}))
        return slots
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    env = thread_env(plan_threads(threads, task_threads=task_threads, workers=workers).threads)
    return [WorkerSlot(i, device, env) for i in range(workers)]


def spawn_workers(
    slots: list[WorkerSlot],
    *,
    task_file: Path,
    run_dir: Path,
    storage: str,
    study_name: str,
    n_trials: int,
    timeout: float | None,
    env: dict[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Start ``mednas search`` worker processes for ``slots[1:]`` (slot 0 is the caller); logs in ``workers/``.

    ``env`` is added to each worker's environment (the tracking URI: :meth:`mednas.tracking.Tracker.worker_env`).
    """
    log_dir = run_dir / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for slot in slots[1:]:
        cmd = [
            sys.executable,
            "-m",
            "mednas",
            "--quiet",
            "search",
            str(task_file),
            "--run-dir",
            str(run_dir),
            "--storage",
            storage,
            "--study-name",
            study_name,
            "--n-trials",
            str(n_trials),
            "--worker",
            "--device",
            slot.device,
        ]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        child_env = {
            **os.environ,
            **MALLOC_ENV,
            **slot.env,
            **(env or {}),
            "MEDNAS_WORKER": str(slot.index),
            "_MEDNAS_REEXEC": "1",
        }
        with open(log_dir / f"{slot.index}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        logger.info(
            "worker %d started (pid %d, %s%s)",
            slot.index,
            procs[-1].pid,
            slot.device,
            f", GPU {slot.env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in slot.env else "",
        )
    return procs


def stop_workers(
    procs: list[subprocess.Popen[bytes]], *, wait: bool = True, timeout: float | None = None
) -> list[int]:
    """Wait for (or terminate) worker processes; return their exit codes."""
    codes = []
    for p in procs:
        if wait:
            try:
                codes.append(p.wait(timeout=timeout))
                continue
            except subprocess.TimeoutExpired:
                pass
        p.terminate()
        try:
            codes.append(p.wait(timeout=30))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes
