"""Epoch time of one x-ray demo network at several thread settings, quiet and beside a CPU-bound job.

What ``benchmarks/contention.py`` cannot show with whole searches: whether any thread count or OpenMP waiting
policy beats mednas's choice (one thread on a busy machine), and how much it matters whether the job runs in
its own session (Linux's session grouping, ``kernel.sched_autogroup_enabled``) or in the benchmark's. Each
setting is a fresh process training the first spec the demo's sampler draws, with the bare loop of
``benchmarks/overhead.py``, for ``--seconds`` seconds; the median epoch (epoch 1 of each run left out) is printed.

    python benchmarks/threads_under_load.py [--seconds 20] [--loads quiet,own-session,same-session] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: name -> (threads, extra environment): 1 or 2 threads as OpenMP waits by default (spinning), 2 with a short
#: spin (GOMP_SPINCOUNT=10000), 2 or 3 with passive waiting (OMP_WAIT_POLICY=PASSIVE).
SETTINGS = {
    "1": (1, {}),
    "2": (2, {}),
    "2-spin10k": (2, {"GOMP_SPINCOUNT": "10000"}),
    "2-passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "3-passive": (3, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
HOG = r"""
import numpy as np
a, b, c = np.random.rand(1024, 1024), np.random.rand(1024, 1024), np.empty((1024, 1024))
while True:
    np.matmul(a, b, out=c)
"""
CHILD = r"""
import json, os, statistics, sys, tempfile, time
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "benchmarks")]
import torch
threads = int(os.environ["OMP_NUM_THREADS"])
torch.set_num_threads(threads)
import overhead as ov
from mednas.config import load_task
from mednas.data import plan_data, read_or_create_salt
from mednas.rundir import RunDir
task = load_task(os.path.join(sys.argv[1], "tasks/demo-xray-nodule.yaml"),
                 presets=[os.path.join(sys.argv[1], "configs/quick-cpu.yaml")], overrides=["proxy.epochs=6"])
with tempfile.TemporaryDirectory() as tmp:
    rd = RunDir(os.path.join(tmp, "run")); rd.root.mkdir(parents=True)
    plan = plan_data(task, rd, salt=read_or_create_salt(rd))
    train = plan.arrays("train", plan.proxy_shape, subset=task.proxy.subset, seed=task.search.seed)
    val = plan.arrays("val", plan.proxy_shape)
    spec = json.loads(sys.argv[2])
    ov._bare_once(task, spec, train, val)  # warm-up
    epochs, t0 = [], time.monotonic()
    while time.monotonic() - t0 < float(sys.argv[3]):
        epochs += ov._bare_once(task, spec, train, val)["epochs_s"][1:]
print(json.dumps({"epoch_median_s": statistics.median(epochs), "epochs": len(epochs)}))
"""
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MEDNAS_TORCH_THREADS",
    "MEDNAS_THREADS",
)


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _THREAD_VARS} | extra


def _first_spec() -> dict[str, Any]:
    """The first spec the demo's sampler draws (as ``benchmarks/overhead.py`` trains it)."""
    code = (
        "import json, os, sys, tempfile; sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], 'benchmarks')]\n"
        "import overhead as ov\nfrom mednas.config import load_task\nfrom mednas.data import plan_data, read_or_create_salt\n"
        "from mednas.rundir import RunDir\n"
        "task = load_task(os.path.join(sys.argv[1], 'tasks/demo-xray-nodule.yaml'), presets=[os.path.join(sys.argv[1], "
        "'configs/quick-cpu.yaml')], overrides=['proxy.epochs=2'])\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    rd = RunDir(os.path.join(tmp, 'run')); rd.root.mkdir(parents=True)\n"
        "    plan = plan_data(task, rd, salt=read_or_create_salt(rd))\n"
        "    tr = plan.arrays('train', plan.proxy_shape, subset=task.proxy.subset, seed=task.search.seed)\n"
        "    va = plan.arrays('val', plan.proxy_shape)\n"
        "    print(json.dumps(ov._trial_once(task, plan, rd, tr, va, -1)['spec']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)],
        env=_env({"OMP_NUM_THREADS": "1"}),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per setting (default 20)")
    parser.add_argument("--loads", default="quiet,own-session,same-session")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS)
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds the job runs before the measurements"
    )
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    spec = _first_spec()
    result: dict[str, Any] = {
        "spec": spec.get("target"),
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    for load in [x for x in args.loads.split(",") if x]:
        if load not in ("quiet", "own-session", "same-session"):
            raise SystemExit(f"--loads: unknown {load!r} (quiet, own-session, same-session)")
        hog = None
        if load != "quiet":
            hog = subprocess.Popen(
                [sys.executable, "-c", HOG],
                start_new_session=load == "own-session",
                env=_env({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}),
            )
            time.sleep(args.warmup)
        try:
            for name in names:
                threads, extra = SETTINGS[name]
                with tempfile.TemporaryDirectory(prefix="mednas-threads-") as cache:
                    env = _env({"OMP_NUM_THREADS": str(threads), "MEDNAS_CACHE_DIR": cache, **extra})
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(ROOT), json.dumps(spec), str(args.seconds)],
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                if out.returncode != 0:
                    raise SystemExit(f"{load} / {name}: failed:\n{out.stderr[-1500:]}")
                rec = json.loads(out.stdout.strip().splitlines()[-1]) | {"load": load, "setting": name}
                result["runs"].append(rec)
                print(
                    f"  {load:12s} {name:10s} epoch median {rec['epoch_median_s']:.3f}s ({rec['epochs']} epochs)",
                    flush=True,
                )
        finally:
            if hog is not None:
                hog.terminate()
                hog.wait()
    quiet = {r["setting"]: r["epoch_median_s"] for r in result["runs"] if r["load"] == "quiet"}
    best_quiet = min(quiet.values()) if quiet else None
    if best_quiet:
        for r in result["runs"]:
            r["vs_best_quiet"] = round(r["epoch_median_s"] / best_quiet, 2)
        print(f"  best quiet epoch {best_quiet:.3f}s; each setting's epoch against it:")
        for r in result["runs"]:
            print(f"    {r['load']:12s} {r['setting']:10s} x{r['vs_best_quiet']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
