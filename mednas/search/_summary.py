"""``summary.json``: the study's state and best candidate, rebuilt from the storage and the trial records.

It is rewritten (atomically) after every trial by whichever worker finished it, so ``mednas status`` and the
report read current numbers even while a search runs in another process.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from mednas.config import TaskConfig
from mednas.rundir import RunDir

__all__ = ["best_trials", "build_summary", "write_summary"]


def _metrics_file(rd: RunDir, number: int) -> dict[str, Any]:
    path = rd.trial_dir(number) / "metrics.json"
    try:
        return rd.read_json(path)
    except Exception:  # noqa: BLE001 - a trial being written by another worker: report what the storage has
        return {}


def best_trials(study: Any, k: int = 1) -> list[Any]:
    """The ``k`` best complete trials, candidates that never started learning ranked after the rest."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    complete.sort(key=lambda t: (t.user_attrs.get("learned") is False, sign * t.values[0], t.number))
    return complete[:k]


def build_summary(task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None) -> dict[str, Any]:
    """Assemble the summary (see DESIGN.md for the keys the checks rely on)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    infeasible = sum(1 for t in trials if t.state == TrialState.PRUNED and "infeasible" in t.user_attrs)
    families = Counter(t.user_attrs.get("family") or t.params.get("family") for t in trials if t.params.get("family"))
    summary: dict[str, Any] = {
        "task": task.name,
        "problem": task.problem,
        "spatial_dims": task.spatial_dims,
        "objective": {"names": [task.objective.name], "directions": [d.name.lower() for d in study.directions]},
        "n_trials": {
            "complete": states.get(TrialState.COMPLETE, 0),
            "pruned": states.get(TrialState.PRUNED, 0) - infeasible,
            "infeasible": infeasible,
            "failed": states.get(TrialState.FAIL, 0),
            "running": states.get(TrialState.RUNNING, 0),
            "waiting": states.get(TrialState.WAITING, 0),
            "target": task.search.n_trials,
        },
        "families": dict(sorted(families.items())),
        "proxy": {
            "shape": list(plan.proxy_shape) if plan else task.proxy.shape,
            "scale": task.proxy.scale,
            "epochs": task.proxy.epochs,
            "subset": task.proxy.subset,
            "full_shape": list(plan.full_shape) if plan else task.training.shape,
            "normalize": plan.prep.normalize if plan else task.data.normalize,
        },
        "study": {"name": study.study_name, "config_hash": study.user_attrs.get("config_hash")},
        "simulated_data": bool(plan.dataset.simulated) if plan else None,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plan is not None:
        augmentation = getattr(plan.dataset, "augmentation", None)
        summary["data"] = {
            "augmentation": augmentation or None,
            "n_cases": len(plan.dataset.cases),
            "splits": {s: len(plan.splits.get(s, [])) for s in ("train", "val", "test")},
            "split_hash": plan.splits.get("hash"),
            "fingerprint_hash": plan.fingerprint.get("hash"),
        }
    best = best_trials(study, 1)
    if best:
        t = best[0]
        rec = _metrics_file(rd, t.number)
        summary["best"] = {
            "trial": t.number,
            "values": list(t.values),
            "spec_hash": t.user_attrs.get("spec_hash"),
            "family": t.user_attrs.get("family"),
            "target": rec.get("target"),
            "params": t.user_attrs.get("params"),
            "macs": t.user_attrs.get("macs"),
            "learned": t.user_attrs.get("learned"),
            "metrics": rec.get("metrics", {}),
            "operating_point": rec.get("operating_point"),
        }
    previous = rd.read_json(rd.summary) if rd.summary.exists() else {}
    # Keys other steps own (retrain's proxy_fidelity, export's bundle) survive a summary rewrite.
    for key in ("proxy_fidelity", "retrain", "export"):
        if key in previous:
            summary[key] = previous[key]
    return summary


def write_summary(task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None) -> dict[str, Any]:
    """Build the summary and write ``summary.json`` atomically."""
    summary = build_summary(task, rd, study, plan)
    rd.write_json(rd.summary, summary)
    return summary
