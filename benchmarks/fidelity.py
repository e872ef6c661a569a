"""Measure proxy fidelity on a task: a search, then `mednas retrain --top-k K`; print tau, regret and cost.

Runs the two commands a user runs (as subprocesses, so each gets the allocator settings the CLI sets), times
them, and collects from the run directory Kendall tau and Spearman rho between proxy and full-fidelity
validation objectives, the top-1 regret, and the full/proxy cost ratio of the retrained candidates.

    python benchmarks/fidelity.py tasks/demo-xray-nodule.yaml --preset configs/quick-cpu.yaml --top-k 3 \\
        --run-dir /tmp/fid/xray --out benchmarks/results/fidelity_xray.json

An existing run directory is continued (the search stops at once when it already has its trials; finished
candidates are not retrained), so a result can be re-collected cheaply. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd[2:] if cmd[1:3] == ["-m", "mednas"] else cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    sys.stderr.write(proc.stdout)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--preset", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="retrain epochs (default: the task's training.epochs)")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)

    mednas = [sys.executable, "-m", "mednas", "--quiet"]
    search = [*mednas, "search", args.task, "--run-dir", args.run_dir]
    for p in args.preset:
        search += ["--preset", p]
    for o in args.overrides:
        search += ["--set", o]
    if args.n_trials:
        search += ["--n-trials", str(args.n_trials)]
    retrain = [*mednas, "retrain", args.run_dir, "--top-k", str(args.top_k)]
    if args.epochs:
        retrain += ["--epochs", str(args.epochs)]
    load_before = os.getloadavg()
    search_s = _run(search)
    retrain_s = _run(retrain)
    load_after = os.getloadavg()

    run = Path(args.run_dir)
    summary = json.loads((run / "summary.json").read_text())
    candidates = []
    for n in summary["retrain"]["candidates"]:
        rec = json.loads((run / "retrain" / str(n) / "metrics.json").read_text())
        row = {"trial": n, "family": rec.get("family"), "params": rec.get("params"), "state": rec["state"],
               "proxy": rec["proxy"]["value"], "proxy_seconds": rec["proxy"].get("seconds")}
        if rec["state"] == "complete":
            row.update(full_val=rec["val"]["objective"], test=rec["test"]["metrics"]["objective"]["value"],
                       full_seconds=rec["seconds"], best_epoch=rec["best_epoch"], epochs=rec["epochs"],
                       learned=rec["learned"])
        candidates.append(row)
    fidelity = {k: v for k, v in summary["proxy_fidelity"].items() if k != "ceiling"}
    import torch

    result = {
        "task": summary["task"],
        "commands": [" ".join(c[2:]) for c in (search, retrain)],
        "search_seconds": round(search_s, 1),
        "retrain_seconds": round(retrain_s, 1),
        "proxy": summary.get("proxy"),
        "retrain": {k: summary["retrain"][k] for k in ("top_k", "shape", "patch", "max_epochs", "patience", "best", "cost")},
        "fidelity": fidelity,
        "candidates": candidates,
        "n_trials": summary.get("n_trials"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "loadavg_before": load_before, "loadavg_after": load_after},
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
