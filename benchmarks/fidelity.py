"""Measure proxy fidelity on a task, in one of two protocols; print the figures and write them as JSON.

``protocol`` (the honest one): N random candidates from the task's search spaces, each trained at several proxy
settings (with P proxy seeds) and at full fidelity with S seeds near convergence, through
`mednas calibrate-proxy`. Reports per proxy setting Kendall tau against the full seed mean with a bootstrap
interval over candidates, tau with the never-learning candidates kept in, the proxy's self-agreement across seeds,
whether its top 3 hold the best candidate, the top-1 regret (also in seed standard deviations) and the cost
ratio; and the seed-noise ceiling (tau between full-fidelity seeds), which no proxy can beat.

    python benchmarks/fidelity.py protocol tasks/demo-xray-nodule.yaml --specs 8 --full-seeds 2 --proxy-seeds 2 \\
        --grid 0.25x4,0.5x4 --full-epochs 20 --run-dir /tmp/fid/p-xray --out benchmarks/results/fidelity_protocol_xray.json

``search-retrain`` (what a user's run reports): a search, then `mednas retrain --top-k K`; tau and regret over
the search's own top candidates, and the full/proxy cost ratio.

    python benchmarks/fidelity.py search-retrain tasks/demo-xray-nodule.yaml --preset configs/quick-cpu.yaml \\
        --top-k 3 --run-dir /tmp/fid/xray --out benchmarks/results/fidelity_xray.json

Both run the commands a user runs (as subprocesses, so each gets the allocator settings the CLI sets) and continue
an existing run directory (finished trainings are re-used), so a result can be re-collected cheaply. Each prints
one JSON object; ``protocol`` also prints a Markdown table for docs/benchmarks.md.
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


def _machine(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, object]:
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def _task_args(args: argparse.Namespace) -> list[str]:
    """``--preset``/``--set`` options passed on to the mednas command."""
    return [a for p in args.preset for a in ("--preset", p)] + [
        a for o in args.overrides for a in ("--set", o)
    ]


def _emit(result: dict[str, object], out: str | None) -> None:
    """Print the result as JSON and, with ``--out``, write it there too."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def _fmt(v: object, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(tau: float | None, ci: list[float] | None) -> str:
    return "n/a" if tau is None else f"{tau:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def protocol(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fidelity.py protocol", description="random candidates x proxy settings x full seeds"
    )
    parser.add_argument("task")
    parser.add_argument("--preset", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--specs", type=int, default=8, help="random candidates (default 8)")
    parser.add_argument(
        "--full-seeds", type=int, default=2, help="full-fidelity seeds per candidate (default 2)"
    )
    parser.add_argument(
        "--proxy-seeds", type=int, default=2, help="seeds per candidate at each proxy setting (default 2)"
    )
    parser.add_argument("--grid", help="proxy settings SCALExEPOCHS,... (default: calibrate-proxy's)")
    parser.add_argument(
        "--full-epochs", type=int, help="full-fidelity maximum epochs (default: training.epochs)"
    )
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)

    cmd = [
        sys.executable,
        "-m",
        "mednas",
        "--quiet",
        "calibrate-proxy",
        args.task,
        "--run-dir",
        args.run_dir,
        "--specs",
        str(args.specs),
        "--full-seeds",
        str(args.full_seeds),
        "--proxy-seeds",
        str(args.proxy_seeds),
    ]
    cmd += _task_args(args)
    if args.grid:
        cmd += ["--grid", args.grid]
    if args.full_epochs:
        cmd += ["--full-epochs", str(args.full_epochs)]
    load_before = os.getloadavg()
    seconds = _run(cmd)
    load_after = os.getloadavg()
    rec = json.loads((Path(args.run_dir) / "calibration.json").read_text())
    full = rec["full"]
    keys = (
        "setting",
        "shape",
        "epochs",
        "n",
        "kendall_tau",
        "kendall_tau_interval",
        "kendall_tau_all",
        "proxy_self_tau",
        "top3_contains_best",
        "top1_regret",
        "regret_in_seed_sd",
        "cost_fraction",
        "seconds",
        "n_not_learning",
    )
    result = {
        "task": rec["task"],
        "protocol": {
            "specs": len(rec["specs"]),
            "full_seeds": rec.get("full_seeds"),
            "proxy_seeds": rec.get("proxy_seeds"),
            "full_shape": full["shape"],
            "full_max_epochs": full["max_epochs"],
            "patience": full["patience"],
        },
        "command": " ".join(cmd[2:]),
        "seconds": round(seconds, 1),
        "seed_ceiling": {k: rec["seed_ceiling"].get(k) for k in ("kendall_tau", "interval", "reason")},
        "full": {
            k: full.get(k)
            for k in (
                "seconds",
                "trainings",
                "seed_sd",
                "n_not_learning",
                "not_learning",
                "values",
                "seed_values",
            )
        },
        "settings": [{k: row.get(k) for k in keys} for row in rec["settings"]],
        "recommendation": rec["recommendation"]["message"],
        "families": sorted({s["family"] for s in rec["specs"]}),
        "machine": _machine(load_before, load_after),
        "date": time.strftime("%Y-%m-%d"),
    }
    _emit(result, args.out)
    c = result["seed_ceiling"]
    lines = [
        f"Task `{rec['task']}`: {result['protocol']['specs']} random candidates ({', '.join(result['families'])}), full fidelity "
        f"{'x'.join(map(str, full['shape']))} up to {full['max_epochs']} epochs (patience {full['patience']}) with "
        f"{rec.get('full_seeds')} seeds, {rec.get('proxy_seeds')} seed(s) per proxy setting; "
        f"{full.get('n_not_learning', 0)} candidate(s) never learned at full fidelity (left out of tau). "
        f"Seed-noise ceiling (tau between full seeds): {_ci(c['kendall_tau'], c['interval'])}.",
        "",
        "| proxy setting | n | tau [95% CI] | tau incl. non-learners | proxy self-tau | top-3 hit | regret (seed SDs) | cost / full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["settings"]:
        top3 = row["top3_contains_best"]
        lines.append(
            f"| {row['setting']} | {row['n']} | {_ci(row['kendall_tau'], row['kendall_tau_interval'])} | "
            f"{_fmt(row['kendall_tau_all'])} | {_fmt(row['proxy_self_tau'])} | "
            f"{'n/a' if top3 is None else 'yes' if top3 else 'no'} | {_fmt(row['top1_regret'], 3)} "
            f"({_fmt(row['regret_in_seed_sd'], 1)}) | "
            f"{'n/a' if row['cost_fraction'] is None else format(row['cost_fraction'], '.0%')} |"
        )
    print("\n".join(lines), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "protocol":
        return protocol(argv[1:])
    if argv and argv[0] == "search-retrain":
        argv = argv[1:]
    return search_retrain(argv)


def search_retrain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fidelity.py search-retrain", description="a search, then mednas retrain"
    )
    parser.add_argument("task")
    parser.add_argument("--preset", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="retrain epochs (default: the task's training.epochs)")
    parser.add_argument("--seeds", type=int, default=1, help="full-fidelity seeds per candidate (default 1)")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)

    mednas = [sys.executable, "-m", "mednas", "--quiet"]
    search = [*mednas, "search", args.task, "--run-dir", args.run_dir]
    search += _task_args(args)
    if args.n_trials:
        search += ["--n-trials", str(args.n_trials)]
    retrain = [*mednas, "retrain", args.run_dir, "--top-k", str(args.top_k), "--seeds", str(args.seeds)]
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
        row = {
            "trial": n,
            "family": rec.get("family"),
            "params": rec.get("params"),
            "state": rec["state"],
            "proxy": rec["proxy"]["value"],
            "proxy_seconds": rec["proxy"].get("seconds"),
        }
        if rec["state"] == "complete":
            row.update(
                full_val=rec["val"]["objective"],
                test=rec["test"]["metrics"]["objective"]["value"],
                full_seconds=rec["seconds"],
                best_epoch=rec["best_epoch"],
                epochs=rec["epochs"],
                learned=rec["learned"],
            )
        candidates.append(row)
    fidelity = {k: v for k, v in summary["proxy_fidelity"].items() if k != "ceiling"}

    result = {
        "task": summary["task"],
        "commands": [" ".join(c[2:]) for c in (search, retrain)],
        "search_seconds": round(search_s, 1),
        "retrain_seconds": round(retrain_s, 1),
        "proxy": summary.get("proxy"),
        "retrain": {
            k: summary["retrain"].get(k)
            for k in ("top_k", "seeds", "shape", "patch", "max_epochs", "patience", "best", "cost")
        },
        "fidelity": fidelity,
        "candidates": candidates,
        "n_trials": summary.get("n_trials"),
        "machine": _machine(load_before, load_after),
        "date": time.strftime("%Y-%m-%d"),
    }
    _emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
