"""Edge deployment (issue 18, item 4): latency on each serving runtime, INT8's cost, latency-bound search.

Three parts, each on one CPU thread (``OMP_NUM_THREADS=1`` is set before torch loads):

``runtimes``: for each task, a short search, full-fidelity retraining of its best candidate (one seed), and
    ``mednas export --quantize int8`` (INT8 calibrated on training images, both models evaluated on the VALIDATION
    split: the export's own figures). Then the exported network is timed at batch 1 in eager torch, TorchScript
    (traced), ONNX Runtime float32 (the bundle's ``model.onnx``) and ONNX Runtime INT8 (``model_int8.onnx``; when
    the export refused it, a copy quantized here only for timing, marked so).
``families``: every search family's default network of each task, untrained, timed in the four runtimes at the
    task's full shape: where INT8 pays and where it does not (latency does not depend on the weights).
``retime``: the runtimes figures again for bundles made earlier (``--bundles``), e.g. on a quieter machine.
``search``: the same search (seed, trials) with and without a latency bound on ONNX Runtime (float32, 1 thread):
    the best validation score under the bound against the best without it, and each winner's latency. The bound
    defaults to the median latency of the unconstrained search's completed candidates (timed after it).

The goal the project holds INT8 to: at least 2x faster than float32 ONNX Runtime on one thread, with the objective
within 0.01 on the validation split.

    python benchmarks/edge.py runtimes --tasks xray,mri,pneumonia --out benchmarks/results/edge_runtimes.json
    python benchmarks/edge.py families --tasks xray,mri,pneumonia --out benchmarks/results/edge_families.json
    python benchmarks/edge.py search --task xray --n-trials 12 --out benchmarks/results/edge_search.json
    python benchmarks/edge.py runtimes --tiny --tasks xray             # CI size, about a minute

No test split is evaluated anywhere here (PneumoniaMNIST's is held by others; use ``mednas evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = {
    "xray": "tasks/demo-xray-nodule.yaml",
    "mri": "tasks/demo-mri-lesion.yaml",
    "pneumonia": "tasks/real-pneumoniamnist.yaml",
}
# Sizes for a 2-core CPU (the figures in docs/benchmarks.md); --tiny is the CI size.
SIZES: dict[str, dict[str, list[str]]] = {
    "run": {
        "xray": ["training.epochs=20"],
        "mri": [
            "training.shape=[32,32,32]",
            "proxy.shape=[16,16,16]",
            "proxy.epochs=10",
            "training.epochs=16",
            "training.patience=5",
        ],
        "pneumonia": ["training.epochs=10", "training.patience=4"],
    },
    "tiny": {
        "xray": [
            "data.n_cases=80",
            "training.shape=[32,32]",
            "proxy.shape=[16,16]",
            "proxy.epochs=1",
            "training.epochs=1",
            "training.batch_size=8",
        ],
        "mri": [
            "data.n_cases=24",
            "training.shape=[16,16,16]",
            "proxy.shape=[16,16,16]",
            "proxy.epochs=1",
            "training.epochs=1",
        ],
        "pneumonia": ["proxy.epochs=1", "training.epochs=1", "proxy.subset=0.1"],
    },
}
COMMON = ["objective.bootstrap.resamples=200"]
RUNTIMES = (("torch", "fp32"), ("torchscript", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


# ------------------------------------------------------------------------------------------------ runtimes


def _overrides(name: str, args: argparse.Namespace) -> list[str]:
    return COMMON + SIZES["tiny" if args.tiny else "run"][name] + list(args.overrides)


def _time_network(model: Any, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Median/p90 of the network in every runtime at batch 1 on one thread."""
    from mednas.runtime import measure_latency

    out = {}
    for runtime, precision in RUNTIMES:
        fig = measure_latency(
            model, shape, runtime=runtime, precision=precision, threads=1, repeats=repeats, warmup=5
        )
        out[f"{runtime}_{precision}"] = {"median_ms": fig.median_ms, "p90_ms": fig.p90_ms}
    return out


def _bundle_times(bundle: Path, model: Any, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Eager and TorchScript from the network; both ONNX figures from the bundle's own files."""
    from mednas.runtime import measure_latency, measure_onnx_file, quantize_int8

    out: dict[str, Any] = {}
    for runtime in ("torch", "torchscript"):
        fig = measure_latency(model, shape, runtime=runtime, threads=1, repeats=repeats, warmup=5)
        out[f"{runtime}_fp32"] = {"median_ms": fig.median_ms, "p90_ms": fig.p90_ms}
    int8 = bundle / "models" / "model_int8.onnx"
    timing_only = not int8.is_file()
    if timing_only:  # the export refused it: quantize a copy with random calibration, for the clock only
        import numpy as np

        int8 = bundle.parent / f"{bundle.name}-timing-int8.onnx"
        rng = np.random.default_rng(0)
        quantize_int8(
            bundle / "models" / "model.onnx",
            int8,
            [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(4)],
        )
    for precision, path in (("fp32", bundle / "models" / "model.onnx"), ("int8", int8)):
        fig = measure_onnx_file(path, shape, precision=precision, threads=1, repeats=repeats, warmup=5)
        out[f"onnxruntime_{precision}"] = {"median_ms": fig.median_ms, "p90_ms": fig.p90_ms}
    out["onnxruntime_int8"]["timing_only_copy"] = timing_only
    out["int8_speedup"] = out["onnxruntime_fp32"]["median_ms"] / out["onnxruntime_int8"]["median_ms"]
    return out


def run_runtimes(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Search, retrain the best at full fidelity, export with INT8, time the bundle's network everywhere."""
    from mednas import api
    from mednas.bundle import load_bundle
    from mednas.rundir import RunDir

    run_dir = work / f"{name}-runtimes"
    overrides = _overrides(name, args)
    t0 = time.perf_counter()
    done = run_dir.is_dir() and bool(RunDir(run_dir).summary().get("retrain"))
    if done:  # --work-dir of an earlier call that got as far as retraining: export and time again only
        print(f"{name}: reusing the search and retraining in {run_dir}", file=sys.stderr)
    else:
        api.search(
            str(ROOT / TASKS[name]),
            run_dir=run_dir,
            overrides=overrides,
            n_trials=args.n_trials or (3 if args.tiny else 8),
            show_progress=False,
        )
    t_search = time.perf_counter() - t0
    if not done:
        api.retrain(run_dir, top_k=1, seeds=1, show_progress=False)
    t_retrain = time.perf_counter() - t0 - t_search
    result = api.export(
        run_dir, work / f"{name}-bundle", quantize="int8", calibration_images=args.calibration
    )
    bundle = Path(result.path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    model = load_bundle(bundle, backend="torch")
    shape = tuple(int(s) for s in _input_shape(meta))
    times = _bundle_times(bundle, model._network, shape, args.repeats)  # the eager torch.nn.Module
    int8 = meta["mednas"].get("int8") or {}
    return {
        "task": name,
        "task_file": TASKS[name],
        "bundle": str(bundle),
        "overrides": overrides,
        "exported": {
            "trial": result.trial,
            "source": result.source,
            "class": (meta["mednas"].get("spec") or {}).get("target"),
            "params": sum(p.numel() for p in model._network.parameters()),
        },
        "input_shape": list(shape),
        "latency_1_thread": times,
        "int8_export": int8,
        "goal": _goal(times, int8),
        "seconds": {"search": round(t_search, 1), "retrain": round(t_retrain, 1), "reused": done},
    }


def _input_shape(meta: dict[str, Any]) -> list[int]:
    image = meta["network_data_format"]["inputs"]["image"]
    return [int(image["num_channels"]), *[int(s) for s in image["spatial_shape"]]]


def _goal(times: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    drop = int8.get("objective_drop")
    speedup = times["int8_speedup"]
    return {
        "int8_speedup": round(speedup, 2),
        "objective_drop": drop,
        "met": bool(speedup >= 2.0 and drop is not None and drop <= 0.01 and int8.get("accepted")),
    }


def run_retime(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time an exported bundle again in every runtime (for a quieter machine than the one it was made on)."""
    from mednas.bundle import load_bundle

    bundle = Path(path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    model = load_bundle(bundle, backend="torch")
    shape = tuple(int(s) for s in _input_shape(meta))
    int8 = meta["mednas"].get("int8") or {}
    times = _bundle_times(bundle, model._network, shape, args.repeats)
    return {
        "bundle": str(bundle),
        "task": meta["mednas"].get("task"),
        "class": (meta["mednas"].get("spec") or {}).get("target"),
        "params": sum(p.numel() for p in model._network.parameters()),
        "input_shape": list(shape),
        "latency_1_thread": times,
        "int8_objective_drop": int8.get("objective_drop"),
        "goal": _goal(times, int8),
    }


# ------------------------------------------------------------------------------------------------ families


def run_families(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Three random networks of each family of the task, untrained, at the full shape, in every runtime."""
    from mednas.api import load_config
    from mednas.spaces import RandomTrial, SpaceContext, create_space
    from mednas.spec import build

    task = load_config(str(ROOT / TASKS[name]), overrides=_overrides(name, args))
    full = tuple(int(s) for s in task.training.shape)
    shape = (task.in_channels, *full)
    ctx = SpaceContext(task.problem, task.spatial_dims, task.in_channels, task.n_classes, full, full)
    rows = []
    for space_name in task.search.spaces:
        space = create_space(space_name, **task.search.space_options.get(space_name, {}))
        for seed in range(args.family_specs):
            spec = space.sample(RandomTrial(seed), ctx)
            model = build(spec).eval()
            times = _time_network(model, shape, args.repeats)
            fp32, int8 = times["onnxruntime_fp32"]["median_ms"], times["onnxruntime_int8"]["median_ms"]
            rows.append(
                {
                    "family": space_name,
                    "seed": seed,
                    "class": spec.class_name,
                    "params": sum(p.numel() for p in model.parameters()),
                    **times,
                    "int8_speedup": fp32 / int8,
                }
            )
            print(
                f"{name} {space_name} seed {seed}: ORT fp32 {fp32:.2f} ms, int8 {int8:.2f} ms",
                file=sys.stderr,
            )
    return {"task": name, "input_shape": list(shape), "families": rows}


# -------------------------------------------------------------------------------------------------- search


def _search_arm(
    name: str, args: argparse.Namespace, run_dir: Path, extra: list[str]
) -> tuple[dict[str, Any], float]:
    from mednas import api

    t0 = time.perf_counter()
    api.search(
        str(ROOT / TASKS[name]),
        run_dir=run_dir,
        overrides=_overrides(name, args) + extra,
        n_trials=args.n_trials or (4 if args.tiny else 12),
        show_progress=False,
    )
    return _candidates(run_dir), time.perf_counter() - t0


def _candidates(run_dir: Path) -> dict[str, Any]:
    """Completed and rejected trials of a run, through the run-directory API."""
    from mednas.rundir import RunDir

    rd = RunDir(run_dir)
    out: dict[str, Any] = {"completed": [], "rejected": 0, "rd": rd}
    for rec in rd.trials().values():
        if rec.state == "complete" and rec.objective_value is not None:
            out["completed"].append(rec)
        elif rec.state == "infeasible":  # rejected before training (the latency bound, or another budget)
            out["rejected"] += 1
    return out


def _latency_of(rd: Any, rec: Any, task: Any, repeats: int) -> float:
    from mednas.runtime import measure_latency
    from mednas.spec import ArchSpec, build

    if rec.latency_ms is not None:
        return float(rec.latency_ms)
    spec = ArchSpec.from_dict(rd.read_json(rd.trial_dir(rec.trial) / "spec.json"))
    shape = (task.in_channels, *task.training.shape)
    return measure_latency(build(spec), shape, runtime="onnxruntime", threads=1, repeats=repeats).median_ms


def _winner(cands: dict[str, Any], sign: float, task: Any, repeats: int) -> dict[str, Any] | None:
    done = [r for r in cands["completed"] if r.feasible is not False]
    if not done:
        return None
    best = max(done, key=lambda r: sign * r.objective_value)
    return {
        "trial": best.trial,
        "class": best.target,
        "score": best.objective_value,
        "latency_ms": _latency_of(cands["rd"], best, task, repeats),
    }


def run_search(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same search with and without a latency bound on ONNX Runtime (float32, one thread)."""
    import statistics

    from mednas.api import load_config

    name = args.task
    task = load_config(str(ROOT / TASKS[name]), overrides=_overrides(name, args))
    sign = -1.0 if task.objective.directions[0] == "minimize" else 1.0
    free, t_free = _search_arm(name, args, work / f"{name}-free", [])
    lat = [_latency_of(free["rd"], r, task, args.repeats) for r in free["completed"]]
    bound = args.bound if args.bound is not None else round(statistics.median(lat), 2)
    rule = [
        "objective.latency.runtime=onnxruntime",
        "objective.latency.threads=1",
        f"objective.constraints=[{{metric: latency_ms, max: {bound}}}]",
    ]
    bound_c, t_bound = _search_arm(name, args, work / f"{name}-bound", rule)
    over = [r.trial for r in bound_c["completed"] if r.latency_ms is not None and r.latency_ms > bound]
    return {
        "task": name,
        "bound_ms": bound,
        "bound_rule": "given" if args.bound is not None else "median latency of the unconstrained candidates",
        "unconstrained": {
            "winner": _winner(free, sign, task, args.repeats),
            "candidates": len(free["completed"]),
            "candidate_latency_ms": sorted(lat),
            "seconds": round(t_free, 1),
        },
        "constrained": {
            "winner": _winner(bound_c, sign, task, args.repeats),
            "candidates_trained": len(bound_c["completed"]),
            "rejected_before_training": bound_c["rejected"],
            "completed_over_bound": over,
            "seconds": round(t_bound, 1),
        },
    }


# ---------------------------------------------------------------------------------------------------- main


def _machine() -> dict[str, Any]:
    import torch

    from mednas.runtime import cpu_name

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "threads": 1,
        "loadavg": os.getloadavg(),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["runtimes", "families", "search", "retime"])
    parser.add_argument("--bundles", default="", help="retime: comma-separated bundle folders")
    parser.add_argument("--tasks", default="xray,mri,pneumonia", help="runtimes/families: comma-separated")
    parser.add_argument("--task", default="xray", choices=sorted(TASKS), help="search: the task")
    parser.add_argument("--n-trials", type=int, help="search trials (default 8 runtimes, 12 search)")
    parser.add_argument("--bound", type=float, help="search: latency bound in ms (default: see above)")
    parser.add_argument("--calibration", type=int, default=64, help="INT8 calibration images (default 64)")
    parser.add_argument("--family-specs", type=int, default=3, help="families: networks per family")
    parser.add_argument("--repeats", type=int, default=50, help="timed passes per figure (default 50)")
    parser.add_argument("--tiny", action="store_true", help="CI size: tiny data, one epoch")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="task override")
    parser.add_argument("--work-dir", help="run directories (default: a temporary folder)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    if args.repeats < 1 or args.calibration < 1 or (args.n_trials is not None and args.n_trials < 1):
        parser.error("--repeats, --calibration and --n-trials must be at least 1")
    if args.bound is not None and args.bound <= 0:
        parser.error("--bound must be a positive number of milliseconds")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    os.environ.setdefault("MEDNAS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.part == "runtimes":
            results: Any = [run_runtimes(n, args, work) for n in args.names]
        elif args.part == "retime":
            results = [run_retime(b, args) for b in args.bundles.split(",") if b.strip()]
        elif args.part == "families":
            results = [run_families(n, args) for n in args.names]
        else:
            results = run_search(args, work)
    out = {
        "benchmark": f"edge {args.part}",
        "tiny": args.tiny,
        "command": "python benchmarks/edge.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "split": "validation (no test split is evaluated)",
        "results": results,
    }
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
