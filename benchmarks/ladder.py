"""Does the resolution ladder pay? (issue 17, item 5.) Flat proxy + full-fidelity retraining versus the ladder.

For each task, with the same search seed and the same number of candidates:

(a) ``flat``: the flat proxy search, then full-fidelity training (``Fidelity.full``: training.epochs, cosine
    schedule, early stopping) of its top ``k`` by proxy score. Compute: for every trial, training cases x voxels
    of the proxy shape x epochs it trained (pruned trials count the epochs they ran), plus the full-fidelity
    trainings of the top k (training cases x full voxels x epochs run).
(b) ``ladder``: ``search.fidelity=ladder``; compute is the records' ``compute.voxel_epochs`` (summary.json).
(c) ``ladder_inherit``: (b) with ``search.inherit=true``, when the task schema accepts that key (else skipped,
    with a note).

The score compared, a mean over 2 seeds on the VALIDATION split (nothing here touches a test split):

- flat: the best trial by proxy score, trained at full fidelity with seed 1 (one of the top-k trainings) and
  seed 2 (an extra training for the measurement only, not counted in the compute);
- ladder: the best top-rung survivor's own top-rung score (its search seed; proxy training settings: constant
  learning rate, the top rung's epochs, weights carried from the lower rungs) and the same candidate trained
  from scratch at full fidelity with a second seed (``Fidelity.full``, measurement only, not counted).

The goal the ladder is held to: its score within one seed standard deviation (of the flat best's two seeds) of
the flat search's, with at most one third of the flat search's compute.

``--fidelity`` adds the fidelity of each rung against full training over the same random candidates, through
``benchmarks/fidelity.py protocol`` (``mednas calibrate-proxy`` with the rungs as its grid: every rung trained
from scratch, not carried): Kendall tau with a bootstrap interval and the seed-noise ceiling. It is slow.

    python benchmarks/ladder.py --tasks xray,pneumonia --n-trials 9 --out benchmarks/results/ladder.json
    python benchmarks/ladder.py --tiny --tasks xray --out /tmp/ladder.json      # CI size, ~30 s

Wall times are measured on whatever else the machine is doing; voxel-epochs are exact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = {
    "xray": "tasks/demo-xray-nodule.yaml",
    "mri": "tasks/demo-mri-lesion.yaml",
    "pneumonia": "tasks/real-pneumoniamnist.yaml",
}
# Downsampled sizes for a 2-core CPU (the figures in docs/benchmarks.md); --tiny is the CI size.
SIZES: dict[str, dict[str, list[str]]] = {
    "run": {
        "xray": [],  # the task as it is: 400 cases, 128x128 full, proxy 64x64 x 12 epochs, 20 full epochs
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
            "proxy.epochs=2",
            "training.epochs=2",
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
COMMON = ["objective.bootstrap.resamples=50"]
ARMS = ("flat", "ladder", "ladder_inherit")


# ------------------------------------------------------------------------------------------------- helpers


def _mean_sd(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and a 95% t interval (two seeds: t = 12.71, a wide interval)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "sd": None, "ci95": None, "values": []}
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    t = {2: 12.706, 3: 4.303, 4: 3.182}.get(len(vals), 2.0)
    ci = None if sd is None else [mean - t * sd / math.sqrt(len(vals)), mean + t * sd / math.sqrt(len(vals))]
    return {"mean": mean, "sd": sd, "ci95": ci, "values": vals}


def _voxels(shape: Any) -> int:
    return math.prod(int(s) for s in shape)


def _inherit_supported(task_path: str, overrides: list[str]) -> bool:
    """Whether the task schema accepts ``search.inherit`` (mednas versions before it refuse the key)."""
    from mednas.config import load_task

    try:
        load_task(ROOT / task_path, overrides=[*overrides, "search.inherit=true"])
    except Exception:  # noqa: BLE001 - any refusal means the key is not there yet
        return False
    return True


class _Data:
    """The run's data plan and the full-fidelity arrays, loaded once per run directory."""

    def __init__(self, run_dir: Path) -> None:
        from mednas.data import plan_data, read_or_create_salt
        from mednas.rundir import RunDir

        self.rd = RunDir(run_dir)
        self.task = self.rd.task()
        self.plan = plan_data(self.task, self.rd, salt=read_or_create_salt(self.rd))
        self._full: tuple[Any, Any] | None = None

    def full(self) -> tuple[Any, Any]:
        from mednas.train import Fidelity

        if self._full is None:
            self._full = Fidelity.full(self.task, self.plan.full_shape).load(self.plan, seed=0)
        return self._full

    def n_train_proxy(self) -> int:
        from mednas.train import Fidelity

        train, _ = Fidelity.proxy(self.task, self.plan.proxy_shape).load(
            self.plan, seed=self.task.search.seed
        )
        return len(train.labels)

    def spec(self, n: int) -> Any:
        from mednas.spec import load_spec

        path = self.rd.trial_dir(n) / "spec.json"
        return load_spec(self.rd.read_json(path), path)

    def train_full(self, n: int, seed: int) -> dict[str, Any]:
        """Train trial ``n``'s spec at full fidelity with ``seed``; its validation score and cost."""
        from mednas.train import Fidelity, train_candidate

        train, val = self.full()
        fidelity = Fidelity.full(self.task, self.plan.full_shape)
        rec = self.rd.trial(n)
        t0 = time.perf_counter()
        trained = train_candidate(
            self.task,
            self.spec(n),
            train,
            val,
            fidelity,
            seed=seed,
            device="cpu",
            loss=rec.loss if rec is not None else None,
            sampling=rec.sampling if rec is not None else None,
        )
        epochs = len(trained.result.history)
        return {
            "trial": n,
            "seed": seed,
            "val": float(trained.result.best_value),
            "epochs": epochs,
            "best_epoch": trained.result.best_epoch,
            "voxel_epochs": len(train.labels) * _voxels(fidelity.shape) * epochs,
            "seconds": round(time.perf_counter() - t0, 1),
        }


def _sign(task: Any) -> float:
    """The primary objective is maximised in the study (``objective.directions[0]``)."""
    return -1.0 if task.objective.directions[0] == "minimize" else 1.0


# ---------------------------------------------------------------------------------------------- the arms


def _search(task_path: str, run_dir: Path, overrides: list[str], n_trials: int) -> float:
    from mednas import api

    t0 = time.perf_counter()
    api.search(
        str(ROOT / task_path), run_dir=run_dir, overrides=overrides, n_trials=n_trials, show_progress=False
    )
    return time.perf_counter() - t0


def _completed(data: _Data) -> list[Any]:
    return [
        r for r in data.rd.trials().values() if r.state == "complete" and r.values and r.values[0] is not None
    ]


def flat_arm(
    task_path: str, run_dir: Path, overrides: list[str], n_trials: int, top_k: int
) -> dict[str, Any]:
    """(a) The flat proxy search, then full-fidelity training of its top k by proxy score."""
    search_s = _search(task_path, run_dir, overrides, n_trials)
    data = _Data(run_dir)
    sign, n_proxy = _sign(data.task), data.n_train_proxy()
    per_voxel = n_proxy * _voxels(data.plan.proxy_shape)
    records = data.rd.trials()
    search_ve = sum(per_voxel * len(r.history or []) for r in records.values())
    # A twin (``duplicate_of``: the same spec sampled again, its record copied) is not trained twice.
    distinct = [r for r in _completed(data) if r.duplicate_of is None]
    ranked = sorted(distinct, key=lambda r: -sign * r.values[0])[:top_k]
    t0 = time.perf_counter()
    top = [data.train_full(r.trial, seed=1) | {"proxy": r.values[0]} for r in ranked]
    retrain_s = time.perf_counter() - t0
    best = top[0]
    second = data.train_full(best["trial"], seed=2)
    full_ve = sum(t["voxel_epochs"] for t in top)
    return {
        "trials": len(records),
        "completed": len(_completed(data)),
        "pruned": sum(r.state == "pruned" for r in records.values()),
        "proxy_shape": list(data.plan.proxy_shape),
        "full_shape": list(data.plan.full_shape),
        "n_train_proxy": n_proxy,
        "n_train_full": len(data.full()[0].labels),
        "compute": {"voxel_epochs": search_ve + full_ve, "search": search_ve, "full_trainings": full_ve},
        "wall_seconds": {"search": round(search_s, 1), "full_trainings": round(retrain_s, 1)},
        "top_k": top,
        "best": {
            "trial": best["trial"],
            "family": records[best["trial"]].family,
            "proxy": best["proxy"],
            "compared": "best trial by proxy score, trained at full fidelity with seeds 1 and 2",
            "score": _mean_sd([best["val"], second["val"]]),
            "second_seed": second,
            "best_of_top_k_full": max(t["val"] * sign for t in top) * sign,
        },
    }


def ladder_arm(task_path: str, run_dir: Path, overrides: list[str], n_trials: int) -> dict[str, Any]:
    """(b)/(c) The ladder; its best top-rung survivor's score, with a second seed at full fidelity."""
    search_s = _search(task_path, run_dir, overrides, n_trials)
    data = _Data(run_dir)
    sign = _sign(data.task)
    summary = data.rd.summary()
    records = data.rd.trials()
    top_rung = len(summary["ladder"]["rungs"]) - 1
    survivors = [r for r in _completed(data) if r.rung_reached == top_rung]
    origin = _origins(records)
    out: dict[str, Any] = {
        "trials": len(records),
        "candidates": len(set(origin.values())),
        "continuations": sum(getattr(r, "continues", None) is not None for r in records.values()),
        # Candidates (a paused trial and the continuation that promoted it are one) that completed rung k;
        # twins (duplicate_of: the same candidate sampled again, nothing trained) left out.
        "reached": {
            str(k): len(
                {
                    origin[n]
                    for n, r in records.items()
                    if r.duplicate_of is None and r.rung_reached is not None and r.rung_reached >= k
                }
            )
            for k in range(top_rung + 1)
        },
        "promotion": summary["ladder"].get("promotion"),
        "pruned": sum(r.state == "pruned" for r in records.values()),
        "rungs": summary["ladder"]["rungs"],
        "eta": summary["ladder"].get("eta"),
        "compute": {
            k: summary["compute"].get(k)
            for k in ("voxel_epochs", "pruned_voxel_epochs", "pruned_share", "seconds")
        },
        "wall_seconds": {"search": round(search_s, 1)},
        "rung_starts": _starts(records),
    }
    if not survivors:
        out["best"] = None
        return out
    best = max(survivors, key=lambda r: sign * r.values[0])
    second = data.train_full(best.trial, seed=(best.seed or 0) + 1000)
    out["best"] = {
        "trial": best.trial,
        "family": best.family,
        "compared": "best top-rung survivor: its own top-rung score (search seed, ladder training) and a "
        "from-scratch full-fidelity training with a second seed",
        "top_rung": float(best.values[0]),
        "second_seed": second,
        "score": _mean_sd([best.values[0], second["val"]]),
    }
    return out


def _origins(records: dict[int, Any]) -> dict[int, int]:
    """Trial -> the candidate it belongs to (a continuation belongs to the paused trial it promoted)."""
    origin: dict[int, int] = {}
    for n in sorted(records):
        cont = getattr(records[n], "continues", None)
        origin[n] = origin.get(int(cont["trial"]), int(cont["trial"])) if cont else n
    return origin


def _starts(records: dict[int, Any]) -> dict[str, int]:
    """How the rungs started: fresh, carried, restarted, inherited (``search.inherit``); a promoted trial's rungs
    taken over by its continuation are counted once."""
    out: dict[str, int] = {}
    for r in records.values():
        for g in r.rungs or []:
            if "continued_from" not in g:
                out[str(g.get("start"))] = out.get(str(g.get("start")), 0) + 1
    return out


def rung_fidelity(task_path: str, overrides: list[str], rungs: list[dict], work: Path, specs: int) -> dict:
    """Each rung's ranking against full training over random candidates, through fidelity.py protocol."""
    import contextlib
    import io

    from benchmarks import fidelity

    grid = ",".join(f"{r['scale']}x{r['epochs']}" for r in rungs)
    out = work / "fidelity.json"
    argv = [task_path, "--specs", str(specs), "--full-seeds", "2", "--proxy-seeds", "1", "--grid", grid]
    argv += [a for o in overrides for a in ("--set", o)]
    argv += ["--run-dir", str(work / "calibrate"), "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        fidelity.protocol(argv)
    rec = json.loads(out.read_text())
    return {"grid": grid, "seed_ceiling": rec["seed_ceiling"], "settings": rec["settings"]}


# ------------------------------------------------------------------------------------------------ running


def _goal(flat: dict, ladder: dict, sign: float) -> dict[str, Any]:
    fb, lb = flat["best"]["score"], (ladder.get("best") or {}).get("score") or {}
    ratio = ladder["compute"]["voxel_epochs"] / flat["compute"]["voxel_epochs"]
    sd = fb["sd"] or 0.0
    gap = None if lb.get("mean") is None else sign * (lb["mean"] - fb["mean"])
    return {
        "compute_ratio": ratio,
        "compute_ok": ratio <= 1 / 3,
        "score_gap": gap,
        "flat_seed_sd": fb["sd"],
        "score_ok": None if gap is None else gap >= -sd,
        "met": bool(ratio <= 1 / 3 and gap is not None and gap >= -sd),
    }


def _reused_flat(
    path: str, task_path: str, overrides: list[str], n: int, top_k: int
) -> dict[str, Any] | None:
    """The flat arm of an earlier result for the same task and settings (None when it has none)."""
    earlier = json.loads(Path(path).read_text())
    for t in earlier.get("tasks", []):
        same = t["task"] == task_path and t["overrides"] == overrides and t["n_trials"] == n
        if same and t.get("flat") and len(t["flat"].get("top_k") or []) == top_k:
            return dict(t["flat"], reused_from=str(path))
    return None


def run_task(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from mednas.config import load_task

    task_path = TASKS[name]
    size = SIZES["tiny" if args.tiny else "run"][name]
    overrides = [*COMMON, *size, *args.overrides]
    n = args.n_trials or (4 if args.tiny else 9)
    result: dict[str, Any] = {"task": task_path, "overrides": overrides, "n_trials": n, "notes": []}
    sign = _sign(load_task(ROOT / task_path, overrides=overrides))
    print(f"[{name}] flat search + top {args.top_k} at full fidelity", file=sys.stderr, flush=True)
    reused = _reused_flat(args.reuse_flat, task_path, overrides, n, args.top_k) if args.reuse_flat else None
    if reused is not None:
        result["flat"] = reused
        result["notes"].append(f"flat arm taken from {args.reuse_flat} (same task, overrides, n and top-k)")
    else:
        result["flat"] = flat_arm(task_path, work / name / "flat", overrides, n, args.top_k)
    print(f"[{name}] ladder", file=sys.stderr, flush=True)
    ladder = [*overrides, "search.fidelity=ladder", *args.ladder_overrides]
    result["ladder"] = ladder_arm(task_path, work / name / "ladder", ladder, n)
    result["goal"] = {"ladder": _goal(result["flat"], result["ladder"], sign)}
    if _inherit_supported(task_path, ladder):
        print(f"[{name}] ladder with search.inherit", file=sys.stderr, flush=True)
        inherit = [*ladder, "search.inherit=true"]
        result["ladder_inherit"] = ladder_arm(task_path, work / name / "inherit", inherit, n)
        result["goal"]["ladder_inherit"] = _goal(result["flat"], result["ladder_inherit"], sign)
    else:
        note = "(c) skipped: the task schema does not accept search.inherit yet"
        print(f"[{name}] {note}", file=sys.stderr)
        result["ladder_inherit"] = None
        result["notes"].append(note)
    if args.fidelity:
        print(f"[{name}] rung fidelity (slow)", file=sys.stderr, flush=True)
        result["rung_fidelity"] = rung_fidelity(
            task_path, overrides, result["ladder"]["rungs"], work / name / "fidelity", args.fidelity_specs
        )
    else:
        result["rung_fidelity"] = None
        result["notes"].append("rung fidelity not measured (run with --fidelity)")
    return result


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table for docs/benchmarks.md."""
    lines = [
        "| task | arm | trials | compute (voxel-epochs) | / flat | wall (s) | best | score (mean ± sd, 2 seeds) | "
        "goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        flat_ve = res["flat"]["compute"]["voxel_epochs"]
        for arm in ARMS:
            a = res.get(arm)
            if a is None:
                lines.append(f"| {res['task']} | {arm} | skipped | | | | | | |")
                continue
            best = a.get("best") or {}
            s = best.get("score") or {}
            wall = sum(a["wall_seconds"].values()) + (
                best.get("second_seed", {}).get("seconds", 0) if arm == "flat" else 0
            )
            goal = res["goal"].get(arm)
            verdict = "" if goal is None else ("met" if goal["met"] else "not met")
            lines.append(
                f"| {res['task']} | {arm} | {a['trials']} | {a['compute']['voxel_epochs']:.3g} | "
                f"{a['compute']['voxel_epochs'] / flat_ve:.2f} | {wall:.0f} | #{best.get('trial')} "
                f"{best.get('family', '')} | {_fmt(s.get('mean'))} ± {_fmt(s.get('sd'))} "
                f"{[round(v, 3) for v in s.get('values', [])]} | {verdict} |"
            )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="xray,pneumonia", help="comma-separated: xray, mri, pneumonia")
    parser.add_argument("--n-trials", type=int, help="candidates per arm (default 9; 4 with --tiny)")
    parser.add_argument("--top-k", type=int, default=3, help="flat: trained at full fidelity (default 3)")
    parser.add_argument("--tiny", action="store_true", help="CI size: tiny data, one or two epochs")
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", help="task override, every arm"
    )
    parser.add_argument("--ladder-set", action="append", default=[], dest="ladder_overrides")
    parser.add_argument("--fidelity", action="store_true", help="also each rung's Kendall tau (slow)")
    parser.add_argument("--fidelity-specs", type=int, default=8)
    parser.add_argument("--work-dir", help="run directories (default: a temporary folder)")
    parser.add_argument(
        "--reuse-flat",
        metavar="JSON",
        help="take the flat arm from an earlier result of this script (same task, overrides, n-trials, top-k): "
        "the flat arm does not involve the ladder, and is the expensive half",
    )
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    os.environ.setdefault("MEDNAS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        t0 = time.perf_counter()
        results = [run_task(name, args, work) for name in names]
        out = {
            "benchmark": "ladder",
            "tiny": args.tiny,
            "top_k": args.top_k,
            "command": "python benchmarks/ladder.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": _machine(),
            "date": time.strftime("%Y-%m-%d"),
            "split": "validation (no test split is evaluated)",
            "tasks": results,
        }
    text = json.dumps(out, indent=1)
    print(text)
    print(table(results), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
