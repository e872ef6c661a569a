"""Train one spec at proxy and at full fidelity on a task's data; print both times and their ratio.

The proxy is what every search trial pays; full fidelity is what retraining pays. Their ratio says how many
proxy trials one full training buys. Both runs use the same spec, seed, training split and validation split.

    python benchmarks/proxy_cost.py tasks/demo-xray-nodule.yaml [--family resnet] [--seed 0] [--out FILE]

Results are printed as JSON (and written to ``--out`` when given).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument(
        "--family", help="search-space family to sample the spec from (default: the task's first)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the spec and for training")
    parser.add_argument(
        "--full-epochs", type=int, help="epochs at full fidelity (default: the task's training.epochs)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mednas.config import load_task
    from mednas.data import plan_data, read_or_create_salt
    from mednas.metrics._objective import evaluate_objective
    from mednas.rundir import RunDir
    from mednas.spaces import create_space, estimate_cost
    from mednas.spec import build
    from mednas.study import class_weights_for, proxy_context
    from mednas.testing import RandomTrial
    from mednas.train import FitSettings, fit, seed_everything

    task = load_task(args.task)
    family = args.family or task.search.spaces[0]
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(Path(tmp) / "run")
        t0 = time.perf_counter()
        plan = plan_data(task, rd, salt=read_or_create_salt(rd))
        space = create_space(family, **task.search.space_options.get(family, {}))
        spec = space.sample(RandomTrial(args.seed), proxy_context(task, plan))
        full_spec = space.adapt_to_shape(spec, plan.full_shape)
        divisor = tuple(space.required_divisor(spec))
        results = {}
        for fidelity, shape, epochs, net_spec in (
            ("proxy", plan.proxy_shape, task.proxy.epochs, spec),
            ("full", plan.full_shape, args.full_epochs or task.training.epochs, full_spec),
        ):
            t_load = time.perf_counter()
            subset = task.proxy.subset if fidelity == "proxy" else 1.0
            train = plan.arrays("train", shape, subset=subset, seed=task.search.seed)
            val = plan.arrays("val", shape)
            load_s = time.perf_counter() - t_load
            settings = FitSettings(
                problem=task.problem,
                n_classes=task.n_classes,
                epochs=epochs,
                batch_size=task.training.batch_size,
                optimizer=task.training.optimizer,
                lr=task.training.lr,
                weight_decay=task.training.weight_decay,
                loss=task.training.loss,
                seed=args.seed,
                device="cpu",
                augment=task.training.augment,
                divisor=divisor,
                class_weights=class_weights_for(task, train.labels),
                schedule="cosine" if fidelity == "full" else "none",
            )
            seed_everything(args.seed)
            model = build(net_spec)
            t_fit = time.perf_counter()
            result = fit(model, train, val, settings, lambda o, v: evaluate_objective(task, o, v))
            fit_s = time.perf_counter() - t_fit
            cost = estimate_cost(net_spec, shape, batch_size=1)
            results[fidelity] = {
                "shape": list(shape),
                "epochs": epochs,
                "train_cases": len(train),
                "val_cases": len(val),
                "seconds": round(fit_s, 2),
                "seconds_per_epoch": round(fit_s / epochs, 3),
                "data_load_seconds": round(load_s, 2),
                "macs_per_image": cost.macs,
                "objective": round(float(result.best_value), 4),
            }
        out = {
            "task": task.name,
            "spec": {"target": spec.target, "family": family, "hash": spec.hash, "params": cost.params},
            "proxy": results["proxy"],
            "full": results["full"],
            "full_over_proxy_time": round(results["full"]["seconds"] / results["proxy"]["seconds"], 2),
            "full_over_proxy_per_epoch": round(
                results["full"]["seconds_per_epoch"] / results["proxy"]["seconds_per_epoch"], 2
            ),
            "setup_seconds": round(time.perf_counter() - t0 - sum(r["seconds"] for r in results.values()), 1),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "device": "cpu",
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


if __name__ == "__main__":
    sys.exit(main())
