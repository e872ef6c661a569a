"""Measure mednas's per-trial overhead: one spec trained by a bare PyTorch loop and by a real search trial.

Both train the same network (same seed, optimizer, batch size, loss, flips, gradient clipping) for the same
epochs on the same cached proxy tensors, with one validation forward pass per epoch. The trial runs through the
search's own objective (``_TrialObjective``) inside an Optuna study on the run's SQLite storage, followed by the
``summary.json`` rewrite a search does after every trial. The framework's share is
``(trial wall - bare wall) / trial wall`` (each repeat's trial against the bare loop run right after it; the
median over repeats), split into before the first epoch, per epoch and after the last
(timed from outside, around ``mednas.train.fit``'s epoch callback, so older versions of mednas can be measured
too; a trial also records the same split as ``timing`` in its ``metrics.json``).

The measured trial is not a study's first: ``--history N`` (default 20) finished trials are added first, their
parameters drawn by the search's own sampler through the search spaces, with made-up scores and per-epoch values
(nothing is trained for them), so the sampler (TPE after its 8 random start-up trials) and the pruner do the work
they do in the middle of a search. ``--history 0`` measures a study's first trial.

An epoch's wall time varies by a few percent from run to run on a shared machine, and the bare loop and the
trial see different moments of it; the per-repeat shares are printed with their range, and the fixed part
(before the first epoch plus after the last, which does not depend on the epochs) separately.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [TASK ...] [--preset FILE] [--set KEY=VALUE ...]
        [--repeats 5] [--epochs N] [--quick] [--out FILE]

Without TASK it measures the x-ray demo (quick-cpu preset) and ``tasks/real-pneumoniamnist.yaml`` (skipped when
its data is absent). ``--quick`` is a seconds-long smoke run (small demo data, 2 epochs, one repeat). One torch
thread unless ``--threads``. Prints one line per task and the JSON result (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = [
    ("tasks/demo-xray-nodule.yaml", ["configs/quick-cpu.yaml"]),
    ("tasks/real-pneumoniamnist.yaml", []),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help="task files (default: the x-ray demo and PneumoniaMNIST)")
    parser.add_argument("--preset", action="append", default=[], help="preset merged under every task given")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of each loop; medians are reported (default 5)"
    )
    parser.add_argument("--epochs", type=int, help="proxy epochs (default: the task's proxy.epochs)")
    parser.add_argument(
        "--history",
        type=int,
        help="finished trials in the study before the measured one (default 20, 0 with --quick; see above)",
    )
    parser.add_argument("--family", help="search-space family of the spec (default: the task's first)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small demo data, 2 epochs, 1 repeat")
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)
    if args.history is not None and args.history < 0:
        parser.error(f"--history must be 0 or more finished trials, got {args.history}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1) if torch.get_num_interop_threads() != 1 else None
    import logging

    logging.getLogger("mednas").setLevel(logging.WARNING)

    if args.quick:
        jobs = [
            (
                str(ROOT / "tasks/demo-xray-nodule.yaml"),
                [str(ROOT / "configs/quick-cpu.yaml")],
                ["data.n_cases=64", "proxy.shape=[32,32]", *args.overrides],
            )
        ]
        args.repeats, args.epochs = 1, args.epochs or 2
    elif args.tasks:
        jobs = [(t, args.preset, args.overrides) for t in args.tasks]
    else:
        jobs = []
        for t, presets in DEFAULT_TASKS:
            jobs.append((str(ROOT / t), [str(ROOT / p) for p in presets], args.overrides))
        os.environ.setdefault("MEDNAS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))

    # Derived data (demo images, proxy caches) goes to a temporary folder, never into the home directory.
    cache = None
    if not os.environ.get("MEDNAS_CACHE_DIR"):
        cache = tempfile.TemporaryDirectory(prefix="mednas-overhead-cache-")
        os.environ["MEDNAS_CACHE_DIR"] = cache.name
    results = []
    for task_file, presets, overrides in jobs:
        try:
            res = measure(
                task_file,
                presets,
                overrides,
                repeats=args.repeats,
                epochs=args.epochs,
                family=args.family,
                history=args.history if args.history is not None else (0 if args.quick else 20),
            )
        except Exception as exc:  # noqa: BLE001 - a task whose data is absent is skipped, the others still run
            if args.tasks or args.quick:
                raise
            print(
                f"{Path(task_file).name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                file=sys.stderr,
            )
            continue
        results.append(res)
        print(_line(res), flush=True)
    if cache is not None:
        os.environ.pop("MEDNAS_CACHE_DIR", None)
        cache.cleanup()
    import mednas

    out = {
        "results": results,
        "mednas": str(Path(mednas.__file__).parent),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def _line(res: dict[str, Any]) -> str:
    o = res["overhead"]
    lo, hi = o.get("share_pct_range", [o["share_pct"], o["share_pct"]])
    return (
        f"{res['task']}: framework {o['share_pct']:.1f}% of a {res['trial']['wall_s']:.2f}s trial "
        f"(repeats {lo:.1f}..{hi:.1f}%; counted part by part {o.get('accounted_share_pct', float('nan')):.1f}%, "
        f"of which fixed {o.get('fixed_share_pct', float('nan')):.1f}%; "
        f"bare loop {res['bare']['wall_s']:.2f}s); before first epoch {o['before_first_epoch_s']:+.3f}s, "
        f"per epoch {o['per_epoch_s']:+.3f}s, after last epoch {o['after_last_epoch_s']:+.3f}s"
    )


def measure(
    task_file: str,
    presets: list[str],
    overrides: list[str],
    *,
    repeats: int,
    epochs: int | None,
    family: str | None,
    history: int = 0,
) -> dict[str, Any]:
    """Median bare-loop and trial timings of one task (see the module docstring)."""
    from mednas.config import load_task
    from mednas.data import plan_data, read_or_create_salt
    from mednas.rundir import RunDir

    extra = [f"proxy.epochs={epochs}"] if epochs else []
    task = load_task(task_file, presets=presets, overrides=[*overrides, *extra])
    if family:
        task = load_task(
            task_file, presets=presets, overrides=[*overrides, *extra, f"search.spaces=[{family}]"]
        )
    with tempfile.TemporaryDirectory(prefix="mednas-overhead-") as tmp:
        rd = RunDir(Path(tmp) / "run")
        rd.root.mkdir(parents=True)
        plan = plan_data(task, rd, salt=read_or_create_salt(rd))
        # The tensors are prepared once, as a search prepares them once per process.
        train = plan.arrays("train", plan.proxy_shape, subset=task.proxy.subset, seed=task.search.seed)
        val = plan.arrays("val", plan.proxy_shape)
        # Untimed warm-up: imports and first-call costs are paid once per search process, not per trial.
        spec = _trial_once(task, plan, rd, train, val, -1, history)["spec"]
        _bare_once(task, spec, train, val)
        from mednas.study import _runner

        if hasattr(_runner, "_freeze_long_lived"):
            _runner._freeze_long_lived()  # as run_search does before its trials
        trials, bares = [], []
        for i in range(repeats):
            # Alternate the two, so a change of machine load hits both alike.
            t = _trial_once(task, plan, rd, train, val, i, history)
            t.pop("spec")
            t.pop("recorded_timing")
            trials.append(t)
            bares.append(_bare_once(task, spec, train, val))
        if hasattr(_runner, "_thaw_long_lived"):
            _runner._thaw_long_lived()
        trial = _medians(trials)
        bare = _medians(bares)
    n = len(trial["epochs_s"])
    # Each repeat's trial against the bare loop run right after it (paired), then the median over repeats.
    pairs = list(zip(trials, bares))

    def paired(fn: Any) -> float:
        return statistics.median(fn(t, b) for t, b in pairs)

    shares = sorted(100 * (t["wall_s"] - b["wall_s"]) / t["wall_s"] for t, b in pairs)
    overhead = {
        "share_pct": round(statistics.median(shares), 2),
        "share_pct_range": [round(shares[0], 2), round(shares[-1], 2)],
        # Counted part by part instead of as a difference of two noisy walls: the fixed parts plus the epoch
        # callbacks' own time (the training loops themselves run the same operations; their difference is noise).
        "accounted_share_pct": round(
            100
            * paired(
                lambda t, b: (
                    (
                        t["before_first_epoch_s"]
                        - b["before_first_epoch_s"]
                        + t["after_last_epoch_s"]
                        - b["after_last_epoch_s"]
                        + t["callbacks_s"]
                    )
                    / t["wall_s"]
                )
            ),
            2,
        ),
        "callbacks_per_epoch_s": round(paired(lambda t, b: t["callbacks_s"] / len(t["epochs_s"])), 4),
        "fixed_share_pct": round(
            100
            * paired(
                lambda t, b: (
                    (
                        t["before_first_epoch_s"]
                        - b["before_first_epoch_s"]
                        + t["after_last_epoch_s"]
                        - b["after_last_epoch_s"]
                    )
                    / t["wall_s"]
                )
            ),
            2,
        ),
        "seconds": round(paired(lambda t, b: t["wall_s"] - b["wall_s"]), 3),
        "before_first_epoch_s": round(
            paired(lambda t, b: t["before_first_epoch_s"] - b["before_first_epoch_s"]), 3
        ),
        "per_epoch_s": round(
            paired(lambda t, b: (sum(t["epochs_s"]) - sum(b["epochs_s"])) / len(t["epochs_s"])), 3
        ),
        "after_last_epoch_s": round(
            paired(lambda t, b: t["after_last_epoch_s"] - b["after_last_epoch_s"]), 3
        ),
    }
    return {
        "task": task.name,
        "spec": {"target": spec["target"], "hash": spec["hash"]},
        "proxy_shape": list(plan.proxy_shape),
        "train_cases": len(train),
        "val_cases": len(val),
        "batch_size": task.training.batch_size,
        "epochs": n,
        "repeats": repeats,
        "history_trials": history,
        "trial": _rounded(trial),
        "bare": _rounded(bare),
        "overhead": overhead,
        "trial_state": trials[-1]["state"],
    }


def _trial_once(
    task: Any, plan: Any, rd: Any, train: Any, val: Any, i: int, history: int = 0
) -> dict[str, Any]:
    import optuna

    from mednas.study._runner import _TrialObjective
    from mednas.study._study import make_pruner, make_sampler
    from mednas.study._summary import write_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A fresh study per repeat (same sampler seed, so the same spec), else the second would reuse the first's score.
    study = optuna.create_study(
        storage=rd.default_storage(),
        study_name=f"overhead-{i}" if i >= 0 else "overhead-warmup",
        sampler=make_sampler(task, 0),
        pruner=make_pruner(task),
        directions=task.objective.directions,
    )
    objective = _TrialObjective(task, plan, rd, train, val, "cpu")
    _add_history(study, task, objective, history)
    number = history
    marks: list[float] = []
    callbacks: list[float] = []
    with _epoch_marks(marks, callbacks):
        t0 = time.perf_counter()
        # As run_search calls it (one trial per call, a full garbage collection after it).
        study.optimize(objective, n_trials=1, gc_after_trial=True, show_progress_bar=False)
        write_summary(task, rd, study, plan=plan, target=history + 1)  # what a search does after every trial
        t_end = time.perf_counter()
    record = json.loads((rd.trial_dir(number) / "metrics.json").read_text())
    spec = json.loads((rd.trial_dir(number) / "spec.json").read_text())
    if record["state"] not in ("complete", "pruned") or len(marks) < 2:
        raise RuntimeError(f"the trial did not train: {record['state']} ({record.get('reason')})")
    import shutil

    shutil.rmtree(rd.trial_dir(number))
    return {
        "wall_s": t_end - t0,
        "before_first_epoch_s": marks[0] - t0,
        "epochs_s": [b - a for a, b in zip(marks, marks[1:])],
        "after_last_epoch_s": t_end - marks[-1],
        "callbacks_s": sum(callbacks),
        "state": record["state"],
        "recorded_timing": record.get("timing"),
        "spec": {
            **spec,
            "hash": record["spec_hash"],
            "loss": record["loss"],
            "sampling": record["sampling"],
            "seed": record["seed"],
            "divisor": record.get("divisor"),
        },
    }


def _add_history(study: Any, task: Any, objective: Any, n: int) -> None:
    """Finish ``n`` trials whose parameters the sampler draws through the search spaces; nothing is trained.

    Their scores and per-epoch values are made up (seeded), low enough that the measured trial is not pruned
    (the benchmark needs all its epochs), so the pruner compares but does not stop it.
    """
    import numpy as np

    from mednas.study._runner import suggest_imbalance

    rng = np.random.default_rng(0)
    multi = task.objective.multi_objective
    for _ in range(n):
        trial = study.ask()
        family = trial.suggest_categorical("family", list(objective.spaces))
        spec = objective.spaces[family].sample(trial, objective.ctx)
        suggest_imbalance(trial, task)
        trial.set_user_attr("spec_hash", spec.hash)
        value = float(rng.uniform(0.0, 0.05))
        if not multi:
            for epoch in range(1, task.proxy.epochs + 1):
                trial.report(value * epoch / task.proxy.epochs, epoch)
        study.tell(trial, [value] * len(task.objective.directions) if multi else value)


@contextlib.contextmanager
def _epoch_marks(marks: list[float], callbacks: list[float] | None = None) -> Iterator[None]:
    """Wrap ``mednas.train.fit`` so ``marks`` gets the start of epoch 1 and the end of every epoch's callback,
    and ``callbacks`` the seconds each epoch's callback took (the trial's per-epoch bookkeeping: its log line,
    Optuna's ``report`` and ``should_prune``).

    Measured from outside, so the same script times versions of mednas that do not record ``timing`` yet.
    """
    import mednas.train as train_mod

    real = train_mod.fit

    def fit(*args: Any, on_epoch: Any = None, **kwargs: Any) -> Any:
        def callback(result: Any) -> None:
            t_in = time.perf_counter()
            if not marks:
                marks.append(t_in - result.seconds)
            try:
                if on_epoch is not None:
                    on_epoch(result)
            finally:
                marks.append(time.perf_counter())
                if callbacks is not None:
                    callbacks.append(marks[-1] - t_in)

        return real(*args, on_epoch=callback, **kwargs)

    train_mod.fit = fit
    try:
        yield
    finally:
        train_mod.fit = real


def _bare_once(task: Any, spec_d: dict[str, Any], train: Any, val: Any) -> dict[str, Any]:
    """The same training in a minimal PyTorch loop: what the trial would cost without the framework."""
    import numpy as np
    import torch

    from mednas.spec import ArchSpec, build
    from mednas.study import class_weights_for
    from mednas.train._losses import make_loss

    t0 = time.perf_counter()
    seed = int(spec_d["seed"])
    torch.manual_seed(seed)
    model = build(
        ArchSpec.from_dict(
            {k: v for k, v in spec_d.items() if k not in ("hash", "loss", "sampling", "seed", "divisor")}
        )
    )
    gen = torch.Generator().manual_seed(seed)
    t = task.training
    opt = {
        "sgd": lambda p: torch.optim.SGD(
            p, lr=t.lr, momentum=0.9, nesterov=True, weight_decay=t.weight_decay
        ),
        "adam": lambda p: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay),
    }.get(t.optimizer, lambda p: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay))(
        model.parameters()
    )
    weights = class_weights_for(task, train.labels)
    loss_fn = make_loss(
        spec_d["loss"],
        task.problem,
        task.n_classes,
        torch.tensor(weights, dtype=torch.float32) if weights else None,
    )
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.labels.astype(np.int64))
    x_val = torch.from_numpy(val.images)
    n, bs = len(train), min(t.batch_size, len(train))
    sample_w = None
    if spec_d["sampling"] == "balanced":
        counts = np.bincount(train.labels.astype(np.int64))
        sample_w = torch.as_tensor(1.0 / counts[train.labels.astype(np.int64)], dtype=torch.float64)
    epochs_s = []
    t_first = time.perf_counter()
    for _ in range(task.proxy.epochs):
        te = time.perf_counter()
        model.train()
        order = (
            torch.multinomial(sample_w, n, replacement=True, generator=gen)
            if sample_w is not None
            else torch.randperm(n, generator=gen)
        )
        n_batches = n // bs if n % bs == 1 and n > bs else math.ceil(n / bs)
        for b in range(n_batches):
            idx = order[b * bs : (b + 1) * bs]
            x, y = x_all[idx], y_all[idx]
            if t.augment:
                for axis in range(2, x.ndim):
                    if torch.rand((), generator=gen).item() < 0.5:
                        x = x.flip(axis)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
        model.eval()
        with torch.inference_mode():
            probs = [torch.softmax(model(x_val[s : s + bs]), dim=1) for s in range(0, len(x_val), bs)]
        torch.cat(probs).numpy()
        epochs_s.append(time.perf_counter() - te)
    t_end = time.perf_counter()
    return {
        "wall_s": t_end - t0,
        "before_first_epoch_s": t_first - t0,
        "epochs_s": epochs_s,
        "after_last_epoch_s": t_end - t_first - sum(epochs_s),
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("wall_s", "before_first_epoch_s", "after_last_epoch_s", "callbacks_s"):
        if all(key in r for r in runs):
            out[key] = statistics.median(r[key] for r in runs)
    n = min(len(r["epochs_s"]) for r in runs)
    out["epochs_s"] = [statistics.median(r["epochs_s"][k] for r in runs) for k in range(n)]
    return out


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: ([round(x, 3) for x in v] if isinstance(v, list) else round(v, 3)) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
