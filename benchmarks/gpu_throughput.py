"""Proxy trials per hour and device utilisation at 1, 2 and 4 concurrent trials per GPU (or CPU workers).

On a GPU machine each setting runs ``mednas search --gpus 0 --trials-per-gpu K``; without CUDA it runs
``--workers K`` on the CPU (the cores are split between the workers). Utilisation is sampled every 0.5 s:
``nvidia-smi`` on a GPU, ``/proc/stat`` on the CPU.

    python benchmarks/gpu_throughput.py [--task tasks/demo-xray-nodule.yaml] [--concurrency 1,2,4] [--trials 8]
    python benchmarks/gpu_throughput.py --tiny          # CI size: a toy dataset, seconds per setting

Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Sampler:
    """Sample device utilisation (percent) in a thread until stopped."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu_times() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            parts = [float(v) for v in fh.readline().split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    def _run(self) -> None:
        last = None if self.gpu else self._cpu_times()
        while not self._stop.wait(0.5):
            if self.gpu:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode == 0 and out.stdout.strip():
                    self.values.append(float(out.stdout.split()[0]))
            else:
                now = self._cpu_times()
                total, idle = now[0] - last[0], now[1] - last[1]  # type: ignore[index]
                last = now
                if total > 0:
                    self.values.append(100.0 * (1 - idle / total))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _task_args(args: argparse.Namespace, tmp: Path) -> list[str]:
    if not args.tiny:
        return [args.task]
    import yaml

    from mednas.testing import tiny_classification_data, tiny_task

    datalist = tiny_classification_data(tmp / "tiny-data", n=48, size=32)
    task = tiny_task(
        "classification",
        datalist,
        proxy={"shape": [16, 16], "epochs": 4},
        search={"pruner": {"name": "none"}},
    )
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(task))
    return [str(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=str(ROOT / "tasks" / "demo-xray-nodule.yaml"))
    parser.add_argument(
        "--concurrency", default="1,2,4", help="concurrent trials per GPU (or CPU workers) to try"
    )
    parser.add_argument("--trials", type=int, default=8, help="proxy trials per setting")
    parser.add_argument("--tiny", action="store_true", help="CI size: a toy dataset and tiny networks")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available()
    levels = [int(k) for k in args.concurrency.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        task_args = _task_args(args, tmp)
        cache = tmp / "cache"
        env = dict(os.environ, MEDNAS_CACHE_DIR=str(cache), MEDNAS_NO_PROGRESS="1")
        # Warm the data cache once so every setting measures training, not the first read.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mednas",
                "--quiet",
                "validate",
                *task_args,
                *sum((["--set", o] for o in args.overrides), []),
            ],
            env=env,
            capture_output=True,
            check=False,
        )
        for k in levels:
            run_dir = tmp / f"run-{k}"
            cmd = [
                sys.executable,
                "-m",
                "mednas",
                "--quiet",
                "search",
                *task_args,
                "--run-dir",
                str(run_dir),
                "--n-trials",
                str(args.trials),
                "--set",
                "search.pruner.name=none",
                *sum((["--set", o] for o in args.overrides), []),
            ]
            cmd += (
                ["--gpus", "0", "--trials-per-gpu", str(k)]
                if gpu
                else ["--workers", str(k), "--device", "cpu"]
            )
            t0 = time.perf_counter()
            with _Sampler(gpu) as sampler:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            summary = json.loads((run_dir / "summary.json").read_text())
            finished = summary["n_trials"]["complete"] + summary["n_trials"]["pruned"]
            util = sampler.values
            results.append(
                {
                    "concurrent": k,
                    "trials": finished,
                    "wall_seconds": round(wall, 1),
                    "trials_per_hour": round(finished / wall * 3600, 1),
                    "utilisation_mean_percent": round(sum(util) / len(util), 1) if util else None,
                    "utilisation_max_percent": round(max(util), 1) if util else None,
                }
            )
            shutil.rmtree(run_dir, ignore_errors=True)
    base = results[0]["trials_per_hour"]
    for r in results:
        r["speedup_vs_1"] = round(r["trials_per_hour"] / base, 2) if base else None
    out = {
        "device": torch.cuda.get_device_name(0) if gpu else f"cpu ({os.cpu_count()} cores)",
        "mode": "--gpus 0 --trials-per-gpu K" if gpu else "--workers K (CPU)",
        "task": "tiny toy dataset (--tiny)" if args.tiny else args.task,
        "trials_per_setting": args.trials,
        "results": results,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
