"""How many CPU threads torch, OpenMP and MKL use: the CPUs this process may use, shared by its workers.

Oversubscribed OpenMP threads collapse throughput on a shared CPU by an order of magnitude (threads spin at
barriers while their partner is descheduled), so every command that trains or predicts sets them itself.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("mednas")

__all__ = [
    "ThreadPlan",
    "apply_threads",
    "busy_cpus",
    "cgroup_cpu_limit",
    "configure_threads",
    "current_threads",
    "plan_threads",
    "thread_env",
    "usable_cpus",
]

# Set for this process and inherited by every process it starts (torch's intra-op pool is OpenMP or MKL).
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Set by a parent mednas (``--workers``) or the CLI for a child: the decision was made there, not again here.
_PARENT_VAR = "MEDNAS_TORCH_THREADS"
# ``MEDNAS_THREADS=torch`` leaves torch's own default alone (for benchmarks against it).
_SWITCH_VAR = "MEDNAS_THREADS"


_OWN_ENV: dict[str, str] = {}
_LAST: ThreadPlan | None = None


@dataclass(frozen=True)
class ThreadPlan:
    """The thread count a process uses and why (recorded in ``env.json``).

    Attributes:
        threads: Torch intra-op threads (and OpenMP/MKL threads) of this process.
        source: ``option`` (``--threads``/``threads=``), ``task`` (``training.threads``), ``parent`` (set by the
            ``mednas`` that started this process), ``environment`` (``OMP_NUM_THREADS``), ``auto`` or ``torch``
            (``MEDNAS_THREADS=torch``: torch's default, untouched).
        usable_cpus: CPUs this process may use (affinity mask and cgroup quota).
        workers: Local worker processes sharing them.
        busy_cpus: CPUs other work kept busy at start (``auto`` only; ``None`` when not measured).
        reduced: The default was lowered because the machine was already busy.
    """

    threads: int
    source: str
    usable_cpus: int
    workers: int = 1
    busy_cpus: float | None = None
    reduced: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def usable_cpus(*, cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """Return the CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the machine's CPUs, not the ones a container or ``taskset`` allows.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota + 0.5)))
    return max(1, cpus)


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> float | None:
    """Return the cgroup CPU quota in CPUs (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), or None.

    The process's own cgroup (from ``/proc/self/cgroup``) is read first, then the hierarchy's root (what a
    container with its own cgroup namespace sees).
    """
    base = Path(root)
    own = _own_cgroups()
    for folder in dict.fromkeys((base / own.get("", "").lstrip("/"), base)):
        try:
            fields = (folder / "cpu.max").read_text().split()
        except OSError:
            continue
        try:
            return (
                int(fields[0]) / int(fields[1] if len(fields) > 1 else 100000) if fields[0] != "max" else None
            )
        except (ValueError, IndexError, ZeroDivisionError):
            return None
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in dict.fromkeys((base / name / own.get(name, "").lstrip("/"), base / name)):
            try:
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None


def _own_cgroups() -> dict[str, str]:
    """Controller list -> this process's cgroup path (``""`` for cgroup v2), from ``/proc/self/cgroup``."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            out[controllers] = path
            for c in controllers.split(","):
                out.setdefault(c, path)
    except (OSError, ValueError):
        pass
    return out


def busy_cpus(window: float = 0.15) -> float | None:
    """Return how many CPUs other work keeps busy now: the lower of the 1-minute load average and a short sample.

    The load average alone lags by a minute (a search that just ended would lower the next command's threads);
    the sample alone misses a job between bursts. ``None`` where neither can be read.
    """
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    sampled = _sampled_busy(window)
    if load is None or sampled is None:
        return sampled if load is None else load
    return min(load, sampled)


def _cpu_ticks() -> dict[str, tuple[int, int]]:
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            ticks = [int(v) for v in vals[:8]]
            out[name] = (sum(ticks), ticks[3] + ticks[4])  # total, idle + iowait
    return out


def _sampled_busy(window: float) -> float | None:
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        first = _cpu_ticks()
        time.sleep(window)
        second = _cpu_ticks()
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    busy = 0.0
    for name in allowed & set(first) & set(second):
        total = second[name][0] - first[name][0]
        if total > 0:
            busy += 1.0 - (second[name][1] - first[name][1]) / total
    return busy


def plan_threads(
    requested: int | None = None,
    *,
    task_threads: int | None = None,
    workers: int = 1,
    usable: int | None = None,
    busy: float | None = None,
    measure: bool = True,
) -> ThreadPlan:
    """Decide the threads of one process.

    Order: ``requested`` (``--threads``), ``task_threads`` (``training.threads``), a parent mednas's choice
    (``MEDNAS_TORCH_THREADS``), ``OMP_NUM_THREADS`` set by the user, then the default: the usable CPUs divided
    by ``workers``, lowered by the CPUs other work already keeps busy (``max(1, usable - round(busy))``).

    Args:
        requested: Threads asked for on the command line or in the API.
        task_threads: The task's ``training.threads``.
        workers: Local worker processes that share the CPUs (``--workers``, GPU slots).
        usable: Usable CPUs (default: :func:`usable_cpus`).
        busy: CPUs busy with other work (default: :func:`busy_cpus` when ``measure``).
        measure: Sample the machine's load for the default.
    """
    usable = usable or usable_cpus()
    workers = max(1, workers)
    if os.environ.get(_SWITCH_VAR, "").lower() == "torch" and requested is None and task_threads is None:
        import torch

        return ThreadPlan(torch.get_num_threads(), "torch", usable, workers)
    for value, source in ((requested, "option"), (task_threads, "task")):
        if value is not None:
            if value < 1:
                raise ValueError(f"threads must be at least 1, not {value}")
            return ThreadPlan(int(value), source, usable, workers)
    for var, source in ((_PARENT_VAR, "parent"), ("OMP_NUM_THREADS", "environment")):
        text = os.environ.get(var, "").strip()
        if text.isdigit() and int(text) >= 1 and _OWN_ENV.get(var) != text:
            return ThreadPlan(int(text), source, usable, workers)
    if busy is None and measure:
        busy = busy_cpus()
    available = usable if busy is None else max(1, min(usable, usable - int(busy + 0.5)))
    return ThreadPlan(max(1, available // workers), "auto", usable, workers, busy, available < usable)


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that give a process (and its children) ``threads`` threads, set before torch starts."""
    return {var: str(threads) for var in (*_THREAD_VARS, _PARENT_VAR)}


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's intra-op and inter-op threads and the OpenMP/MKL environment to ``plan.threads``.

    The environment reaches this process's OpenMP runtime only if torch was not imported yet; torch's own
    setters work either way. Inter-op threads can only be set before any parallel work: later it stays as it was.
    """
    if plan.source == "torch":
        return
    env = {k: v for k, v in thread_env(plan.threads).items() if k != _PARENT_VAR}
    os.environ.update(env)
    _OWN_ENV.update(env)  # what this process set is no user's choice: a later plan in it decides afresh
    import torch

    if torch.get_num_threads() != plan.threads:
        torch.set_num_threads(plan.threads)
    try:
        if torch.get_num_interop_threads() != plan.threads:
            torch.set_num_interop_threads(plan.threads)
    except RuntimeError:  # parallel work has started (or it was set before): keep it
        pass


def configure_threads(
    requested: int | None = None, *, task_threads: int | None = None, workers: int = 1, announce: bool = True
) -> ThreadPlan:
    """Plan and apply this process's threads; log one line when the default was lowered for a busy machine.

    Args:
        requested: ``--threads`` (``None``: the task's, then the default).
        task_threads: The task's ``training.threads``.
        workers: Local worker processes sharing the CPUs.
        announce: Log the lowered default (off for worker processes, whose parent said it).

    Returns:
        The plan applied (also what :func:`current_threads` returns for ``env.json``).
    """
    global _LAST
    plan = plan_threads(requested, task_threads=task_threads, workers=workers)
    apply_threads(plan)
    if plan.reduced and announce:
        logger.warning(
            "this machine is busy (%.1f of %d CPUs in use by other work): %d thread(s)%s instead of %d; "
            "override with --threads N",
            plan.busy_cpus or 0.0,
            plan.usable_cpus,
            plan.threads,
            f" per worker x {plan.workers}" if plan.workers > 1 else "",
            max(1, plan.usable_cpus // plan.workers),
        )
    else:
        logger.debug("threads: %s", plan.to_dict())
    _LAST = plan
    return plan


def current_threads() -> dict[str, Any]:
    """The threads this process uses, for ``env.json``: torch's intra-op/inter-op counts and the plan behind them."""
    import torch

    out: dict[str, Any] = {
        "torch": torch.get_num_threads(),
        "interop": torch.get_num_interop_threads(),
        **{var: os.environ.get(var) for var in _THREAD_VARS},
    }
    if _LAST is not None:
        out["plan"] = _LAST.to_dict()
    return out
