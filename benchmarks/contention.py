"""Measure a small x-ray demo search on the machine as it is and beside a CPU-bound job using every core.

Each measurement is a fresh ``mednas search`` process (the demo task, a fixed number of trials and epochs, no
pruning, so every trial trains the same epochs), once with mednas's thread default and once with torch's own
default (``MEDNAS_THREADS=torch``), optionally also torch's default with ``OMP_WAIT_POLICY=PASSIVE``. The load
is one process multiplying matrices with as many BLAS threads as there are usable CPUs; it runs ``--warmup``
seconds before the loaded measurements start, as a job that is already running would (the load average sees
it). The script prints per-epoch and per-trial seconds, quiet and loaded, and the slowdown.

Two loaded settings, because Linux shares a busy CPU differently between them (``kernel.sched_autogroup_enabled``,
on by default in desktop and server distributions): ``loaded`` starts the job in its own session, as another
user's job, a job in another terminal or a ``nohup``/``setsid`` job is (the scheduler then shares the CPUs
between the two sessions); ``loaded-same-session`` starts it in the benchmark's own session, as ``job &`` followed
by ``mednas search`` in one shell would (the scheduler then shares them thread by thread: one training thread
beside the job's two gets a third of the machine).

    python benchmarks/contention.py [--n-trials 4] [--epochs 6] [--modes mednas,torch] \
        [--loads quiet,loaded,loaded-same-session] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MEDNAS_TORCH_THREADS",
    "MEDNAS_THREADS",
    "OMP_WAIT_POLICY",
)
MODES = {
    "mednas": {},  # mednas's default: usable CPUs, fewer when the machine is busy at start
    "torch": {"MEDNAS_THREADS": "torch"},  # torch's default (physical cores), as before issue 15
    "torch-passive": {"MEDNAS_THREADS": "torch", "OMP_WAIT_POLICY": "PASSIVE"},
}
HOG = r"""
import numpy as np
a, b, c = np.random.rand(1024, 1024), np.random.rand(1024, 1024), np.empty((1024, 1024))
while True:
    np.matmul(a, b, out=c)
"""
_EPOCH = re.compile(r"epoch (\d+)/\d+: .*\(([\d.]+)s\)")


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    return env | {"MEDNAS_NO_PROGRESS": "1"} | extra


def _search(mode: str, args: argparse.Namespace, work: Path, label: str) -> dict[str, Any]:
    run_dir = work / f"{label}-{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "search",
        str(ROOT / "tasks/demo-xray-nodule.yaml"),
        "--preset",
        str(ROOT / "configs/quick-cpu.yaml"),
        "--run-dir",
        str(run_dir),
        "--n-trials",
        str(args.n_trials),
        "--set",
        f"proxy.epochs={args.epochs}",
        "--set",
        "search.pruner.name=none",
        "--quiet",
    ]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(MODES[mode]), capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} {mode}: mednas search failed:\n{proc.stderr[-2000:]}")
    trials, epochs = [], []
    for mfile in sorted((run_dir / "trials").glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
        rec = json.loads(mfile.read_text())
        if rec.get("seconds") is not None:
            trials.append(float(rec["seconds"]))
        timed = (rec.get("timing") or {}).get("epochs_s")
        log = mfile.parent / "log.txt"
        if timed:  # the trial record's own timing (epoch 1 left out: first-touch costs)
            epochs += [float(t) for t in timed[1:]]
        elif log.is_file():
            epochs += [float(m.group(2)) for m in _EPOCH.finditer(log.read_text()) if int(m.group(1)) > 1]
    env = json.loads((run_dir / "env.json").read_text())
    threads = env.get("threads") or {"torch": env.get("torch_threads")}
    busy_note = next((line for line in proc.stderr.splitlines() if "machine is busy" in line), None)
    out = {
        "mode": mode,
        "load": label,
        "wall_s": round(wall, 1),
        "trials_s": [round(t, 2) for t in trials],
        "trial_median_s": round(statistics.median(trials), 2) if trials else None,
        "epoch_median_s": round(statistics.median(epochs), 3) if epochs else None,
        "epochs_timed": len(epochs),
        "threads": threads,
        "busy_warning": busy_note,
        "loadavg_after": os.getloadavg()[0],
    }
    print(
        f"  {label:19s} {mode:14s} torch threads {threads.get('torch')}: epoch median {out['epoch_median_s']}s, "
        f"trial median {out['trial_median_s']}s ({len(trials)} trials, wall {wall:.0f}s)",
        flush=True,
    )
    return out


def _autogroup() -> str | None:
    """Whether the kernel groups by session when it shares a busy CPU (``/proc/sys/kernel/sched_autogroup_enabled``)."""
    try:
        return {"1": "on", "0": "off"}.get(
            Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
        )
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=4, help="trials per measurement (default 4)")
    parser.add_argument("--epochs", type=int, default=6, help="proxy epochs per trial (default 6)")
    parser.add_argument("--modes", default="mednas,torch", help="comma list of mednas, torch, torch-passive")
    parser.add_argument(
        "--loads",
        default="quiet,loaded",
        help="comma list of quiet, loaded (job in its own session), loaded-same-session",
    )
    parser.add_argument(
        "--warmup", type=float, default=70.0, help="seconds the load runs before the loaded measurements"
    )
    parser.add_argument(
        "--timeout", type=float, help="--timeout for each search (caps a very slow measurement)"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    loads = [x for x in args.loads.split(",") if x]
    sys.path.insert(0, str(ROOT))
    from mednas._threads import busy_cpus, usable_cpus

    cpus = usable_cpus()
    result: dict[str, Any] = {
        "machine": {"usable_cpus": cpus, "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "command": "mednas search tasks/demo-xray-nodule.yaml --preset configs/quick-cpu.yaml "
        f"--n-trials {args.n_trials} --set proxy.epochs={args.epochs} --set search.pruner.name=none",
        "load": f"one process: numpy {cpus}-thread matmul loop, started {args.warmup:.0f}s before "
        "(loaded: in its own session; loaded-same-session: in the benchmark's)",
        "runs": [],
    }
    print(
        f"contention: {cpus} usable CPUs; busy now {busy_cpus(0.5):.2f} CPUs; load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="mednas-contention-") as tmp:
        work = Path(tmp)
        if "quiet" in loads:
            result["quiet_busy_cpus_at_start"] = round(busy_cpus(0.5) or 0.0, 2)
            for mode in modes:
                result["runs"].append(_search(mode, args, work, "quiet"))
        for label in [x for x in loads if x != "quiet"]:
            if label not in ("loaded", "loaded-same-session"):
                raise SystemExit(f"--loads: unknown load {label!r} (quiet, loaded, loaded-same-session)")
            hog = subprocess.Popen(
                [sys.executable, "-c", HOG],
                start_new_session=label == "loaded",
                env=_clean_env({"OPENBLAS_NUM_THREADS": str(cpus), "OMP_NUM_THREADS": str(cpus)}),
            )
            try:
                time.sleep(args.warmup)
                result[f"{label}_busy_cpus_at_start"] = round(busy_cpus(0.5) or 0.0, 2)
                result[f"{label}_loadavg_at_start"] = os.getloadavg()[0]
                for mode in modes:
                    result["runs"].append(_search(mode, args, work, label))
            finally:
                hog.terminate()
                hog.wait()
    result["autogroup"] = _autogroup()
    by = {(r["load"], r["mode"]): r for r in result["runs"]}
    result["slowdown"] = {}
    for label in [x for x in loads if x != "quiet"]:
        for mode in modes:
            q, ld = by.get(("quiet", mode)), by.get((label, mode))
            if q and ld and q["epoch_median_s"] and ld["epoch_median_s"]:
                s = {
                    "epoch": round(ld["epoch_median_s"] / q["epoch_median_s"], 2),
                    "trial": round(ld["trial_median_s"] / q["trial_median_s"], 2)
                    if q["trial_median_s"] and ld["trial_median_s"]
                    else None,
                }
                result["slowdown"][f"{label}/{mode}"] = s
                print(f"  slowdown {label} {mode}: per epoch x{s['epoch']}, per trial x{s['trial']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
