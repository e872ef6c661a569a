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

__all__ = ["best_trials", "build_summary", "pareto_front", "write_summary"]


def _metrics_file(rd: RunDir, number: int) -> dict[str, Any]:
    path = rd.trial_dir(number) / "metrics.json"
    try:
        return rd.read_json(path)
    except Exception:  # noqa: BLE001 - a trial being written by another worker: report what the storage has
        return {}


def _feasible(t: Any) -> bool:
    return t.user_attrs.get("feasible", True) is not False


def _signs(study: Any) -> list[float]:
    return [1.0 if d.name == "MAXIMIZE" else -1.0 for d in study.directions]


def pareto_front(study: Any) -> list[Any]:
    """Non-dominated complete trials that meet every constraint and started learning, best primary first.

    A trial that merely repeats an earlier one's architecture (``duplicate_of``) is left out.
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    pool = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and _feasible(t) and t.user_attrs.get("learned") is not False and "duplicate_of" not in t.user_attrs]
    scored = [(t, [s * v for s, v in zip(signs, t.values)]) for t in pool]

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a)) for _, b in scored)

    front = [t for t, a in scored if not dominated(a)]
    return sorted(front, key=lambda t: (-signs[0] * t.values[0], t.number))


def best_trials(study: Any, k: int = 1) -> list[Any]:
    """The ``k`` best complete trials by the primary objective.

    Trials that violate a constraint are never included; trials that never started learning come after all
    others. Multi-objective studies list their Pareto front first (by the primary objective), then the rest.
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values and _feasible(t)]
    complete.sort(key=lambda t: (t.user_attrs.get("learned") is False, -signs[0] * t.values[0], t.number))
    if len(study.directions) > 1:
        front = pareto_front(study)
        numbers = {t.number for t in front}
        complete = front + [t for t in complete if t.number not in numbers]
    return complete[:k]


def build_summary(task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None, target: int | None = None) -> dict[str, Any]:
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
        "objective": {"names": task.objective.names, "directions": [d.name.lower() for d in study.directions]},
        "n_trials": {
            "complete": states.get(TrialState.COMPLETE, 0),
            "pruned": states.get(TrialState.PRUNED, 0) - infeasible,
            "infeasible": infeasible,
            "failed": states.get(TrialState.FAIL, 0),
            "running": states.get(TrialState.RUNNING, 0),
            "waiting": states.get(TrialState.WAITING, 0),
            "target": target or task.search.n_trials,
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
    if task.objective.constraints:
        summary["constraints"] = [str(c) for c in task.objective.constraints]
        summary["n_trials"]["infeasible_after_training"] = sum(
            1 for t in trials if t.state == TrialState.COMPLETE and not _feasible(t)
        )
    if len(study.directions) > 1:
        summary["pareto_front"] = [
            {"trial": t.number, "values": list(t.values), "spec_hash": t.user_attrs.get("spec_hash"),
             "family": t.user_attrs.get("family"), "params": t.user_attrs.get("params")}
            for t in pareto_front(study)
        ]
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
            "loss": rec.get("loss"),
            "sampling": rec.get("sampling"),
            "constraints": rec.get("constraints"),
        }
    previous = rd.read_json(rd.summary) if rd.summary.exists() else {}
    # Keys other steps own (retrain's proxy_fidelity, export's bundle) survive a summary rewrite.
    for key in ("proxy_fidelity", "retrain", "export"):
        if key in previous:
            summary[key] = previous[key]
    if target is None and isinstance(previous.get("n_trials"), dict) and previous["n_trials"].get("target"):
        summary["n_trials"]["target"] = previous["n_trials"]["target"]
    return summary


def write_summary(task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None, target: int | None = None) -> dict[str, Any]:
    """Build the summary and write ``summary.json`` atomically."""
    summary = build_summary(task, rd, study, plan, target)
    rd.write_json(rd.summary, summary)
    return summary
