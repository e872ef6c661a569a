"""``summary.json``: the study's state and best candidate, rebuilt from the storage and the trial records.

It is rewritten (atomically) after every trial by whichever worker finished it, so ``mednas status`` and the
report read current numbers even while a search runs in another process.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

from mednas.config import TaskConfig
from mednas.rundir import RunDir

__all__ = [
    "STOP_REASONS",
    "best_trials",
    "build_summary",
    "clear_stop",
    "pareto_front",
    "record_stop",
    "write_summary",
]

#: Why a search session ended, as ``summary.json`` ``stopped.reason`` records it.
STOP_REASONS = ("n_trials reached", "timeout reached", "interrupted", "failed")


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


def _with_reevaluation(study: Any, trials: list[Any]) -> list[Any]:
    """Copies of ``trials`` whose user attributes include their re-evaluation (stored on the study)."""
    from mednas.study._reevaluate import reevaluations

    extra = reevaluations(study)
    if not extra:
        return trials
    out = []
    for t in trials:
        r = extra.get(t.number)
        if r:
            t = copy.copy(t)
            t.user_attrs = {
                **t.user_attrs,
                "proxy_seed_values": list(r["values"]),
                "proxy_mean": r["mean"],
                "proxy_std": r["std"],
                "proxy_seeds": list(r.get("seeds") or []),
            }
        out.append(t)
    return out


def _primary(t: Any, by_mean: bool = True) -> float:
    """A trial's primary proxy score: the mean over seeds when it was re-evaluated, else its single value."""
    mean = t.user_attrs.get("proxy_mean") if by_mean else None
    return float(mean) if mean is not None else float(t.values[0])


def pareto_front(study: Any, *, by_mean: bool = True) -> list[Any]:
    """Non-dominated complete trials that meet every constraint and started learning, best primary first.

    A trial that merely repeats an earlier one's architecture (``duplicate_of``) is left out. Dominance uses
    the measured values; the order uses the seed mean of re-evaluated trials (``proxy_mean``).
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    pool = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values
        and _feasible(t)
        and t.user_attrs.get("learned") is not False
        and "duplicate_of" not in t.user_attrs
    ]
    pool = _with_reevaluation(study, pool)
    scored = [(t, [s * v for s, v in zip(signs, t.values)]) for t in pool]

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a)) for _, b in scored)

    front = [t for t, a in scored if not dominated(a)]
    return sorted(front, key=lambda t: (-signs[0] * _primary(t, by_mean), t.number))


def best_trials(study: Any, k: int = 1, *, by_mean: bool = True) -> list[Any]:
    """The ``k`` best complete trials by the primary objective.

    Trials that violate a constraint are never included; trials that never started learning come after all
    others. A trial re-evaluated with extra seeds (``search.reevaluate``) ranks by its seed mean, which the
    returned trial carries as user attributes ``proxy_mean``, ``proxy_std``, ``proxy_seed_values`` and
    ``proxy_seeds``. Multi-objective studies list their Pareto front first (by the primary objective), then
    the rest.

    Args:
        study: The search's study.
        k: How many trials.
        by_mean: Rank re-evaluated trials by their seed mean (False: by their first, single-seed value).
    """
    from optuna.trial import TrialState

    signs = _signs(study)
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and _feasible(t)
    ]
    complete = _with_reevaluation(study, complete)
    complete.sort(
        key=lambda t: (t.user_attrs.get("learned") is False, -signs[0] * _primary(t, by_mean), t.number)
    )
    if len(study.directions) > 1:
        front = pareto_front(study, by_mean=by_mean)
        numbers = {t.number for t in front}
        complete = front + [t for t in complete if t.number not in numbers]
    return complete[:k]


def build_summary(
    task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None, target: int | None = None
) -> dict[str, Any]:
    """Assemble the summary (see DESIGN.md for the keys the checks rely on)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    families = Counter(
        t.user_attrs.get("family") or t.params.get("family") for t in trials if t.params.get("family")
    )
    summary: dict[str, Any] = {
        "task": task.name,
        "problem": task.problem,
        "spatial_dims": task.spatial_dims,
        "objective": {
            "names": task.objective.names,
            "directions": [d.name.lower() for d in study.directions],
        },
        "n_trials": _trial_counts(trials, target or task.search.n_trials),
        "families": dict(sorted(families.items())),
        "proxy": _proxy_summary(task, plan),
        "study": {"name": study.study_name, "config_hash": study.user_attrs.get("config_hash")},
        "simulated_data": bool(plan.dataset.simulated) if plan else None,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plan is not None:
        summary["data"] = _data_summary(plan)
    if task.objective.constraints:
        summary["constraints"] = [str(c) for c in task.objective.constraints]
        summary["n_trials"]["infeasible_after_training"] = sum(
            1 for t in trials if t.state == TrialState.COMPLETE and not _feasible(t)
        )
    if len(study.directions) > 1:
        summary["pareto_front"] = [
            {
                "trial": t.number,
                "values": list(t.values),
                "spec_hash": t.user_attrs.get("spec_hash"),
                "family": t.user_attrs.get("family"),
                "params": t.user_attrs.get("params"),
            }
            for t in pareto_front(study)
        ]
    best = best_trials(study, 1)
    if best:
        summary["best"] = _best_summary(rd, best[0])
    reevaluation = _reevaluation_summary(task, study, trials)
    if reevaluation is not None:
        summary["reevaluation"] = reevaluation
    _keep_others_keys(summary, rd, target)
    return summary


def _trial_counts(trials: list[Any], target: int) -> dict[str, Any]:
    """``summary.json`` ``n_trials``: trials per state (infeasible ones apart from pruned), not learning, target."""
    from optuna.trial import TrialState

    states = Counter(t.state for t in trials)
    infeasible = sum(1 for t in trials if t.state == TrialState.PRUNED and "infeasible" in t.user_attrs)
    # Flagged as never started learning: pruned at the check epoch, or complete and flagged at the end.
    not_learning = sum(
        1
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.user_attrs.get("learned") is False
    )
    return {
        "complete": states.get(TrialState.COMPLETE, 0),
        "pruned": states.get(TrialState.PRUNED, 0) - infeasible,
        "infeasible": infeasible,
        "failed": states.get(TrialState.FAIL, 0),
        "running": states.get(TrialState.RUNNING, 0),
        "waiting": states.get(TrialState.WAITING, 0),
        "not_learning": not_learning,
        "target": target,
    }


def _proxy_summary(task: TaskConfig, plan: Any | None) -> dict[str, Any]:
    """``summary.json`` ``proxy``: the proxy's shape, scale, epochs and subset, the full shape, the normalisation."""
    return {
        "shape": list(plan.proxy_shape) if plan else task.proxy.shape,
        "scale": task.proxy.scale,
        "epochs": task.proxy.epochs,
        "subset": task.proxy.subset,
        "full_shape": list(plan.full_shape) if plan else task.training.shape,
        "normalize": plan.prep.normalize if plan else task.data.normalize,
    }


def _data_summary(plan: Any) -> dict[str, Any]:
    """``summary.json`` ``data``: augmentation, case and split counts, and the split and fingerprint hashes."""
    augmentation = getattr(plan.dataset, "augmentation", None)
    return {
        "augmentation": augmentation or None,
        "n_cases": len(plan.dataset.cases),
        "splits": {s: len(plan.splits.get(s, [])) for s in ("train", "val", "test")},
        "split_hash": plan.splits.get("hash"),
        "fingerprint_hash": plan.fingerprint.get("hash"),
    }


def _best_summary(rd: RunDir, t: Any) -> dict[str, Any]:
    """``summary.json`` ``best``: the best trial's values and spec from the storage, its metrics from its record."""
    rec = _metrics_file(rd, t.number)
    return {
        "trial": t.number,
        "values": list(t.values),
        "spec_hash": t.user_attrs.get("spec_hash"),
        "family": t.user_attrs.get("family"),
        "target": rec.get("target"),
        "params": t.user_attrs.get("params"),
        "macs": t.user_attrs.get("macs"),
        "learned": t.user_attrs.get("learned"),
        "proxy_mean": t.user_attrs.get("proxy_mean"),
        "proxy_std": t.user_attrs.get("proxy_std"),
        "metrics": rec.get("metrics", {}),
        "operating_point": rec.get("operating_point"),
        "loss": rec.get("loss"),
        "sampling": rec.get("sampling"),
        "constraints": rec.get("constraints"),
    }


def _keep_others_keys(summary: dict[str, Any], rd: RunDir, target: int | None) -> None:
    """Copy into ``summary`` the keys of the summary on disk that other steps own, and its trial target."""
    previous = rd.read_json(rd.summary) if rd.summary.exists() else {}
    # Keys other steps own (retrain's proxy_fidelity, export's bundle) survive a summary rewrite.
    # `stopped` too: a --workers child or a joining process may rewrite the summary after the session's end was
    # recorded; the next session clears it when it starts (clear_stop).
    for key in ("proxy_fidelity", "retrain", "export", "stopped"):
        if key in previous:
            summary[key] = previous[key]
    if target is None and isinstance(previous.get("n_trials"), dict) and previous["n_trials"].get("target"):
        summary["n_trials"]["target"] = previous["n_trials"]["target"]


def _reevaluation_summary(task: TaskConfig, study: Any, trials: list[Any]) -> dict[str, Any] | None:
    """``summary.json`` ``reevaluation``: who was re-evaluated, the means, and what it cost."""
    from mednas.study._reevaluate import reevaluations

    done = reevaluations(study)
    cfg = task.search.reevaluate
    if not cfg.top and not done:
        return None
    # The search's own cost: the wall time of every trial that ran (complete, pruned, failed).
    search_seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_start is not None and t.datetime_complete is not None
    )
    seconds = sum(float(r.get("seconds") or 0.0) for r in done.values())
    return {
        "top": cfg.top,
        "seeds": cfg.seeds,
        "trials": [
            {"trial": n, "values": r["values"], "mean": r["mean"], "std": r["std"]}
            for n, r in sorted(done.items())
        ],
        "seconds": seconds,
        "search_seconds": search_seconds,
        "cost_fraction": seconds / search_seconds if search_seconds > 0 else None,
    }


def write_summary(
    task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None, target: int | None = None
) -> dict[str, Any]:
    """Build the summary and write ``summary.json`` atomically."""
    summary = build_summary(task, rd, study, plan, target)
    rd.write_json(rd.summary, summary)
    return summary


def record_stop(rd: RunDir, reason: str, detail: str | None = None) -> dict[str, Any]:
    """Record in ``summary.json`` why the search session ended: ``stopped: {reason, at[, detail]}``.

    Args:
        rd: The run directory.
        reason: One of :data:`STOP_REASONS`.
        detail: A line on what happened (``5 trials failed in a row``, ``SIGTERM``), or None.

    Returns:
        The summary as written.
    """
    import datetime as _dt

    if reason not in STOP_REASONS:
        raise ValueError(f"stop reason {reason!r} is not one of {STOP_REASONS}")
    summary = rd.read_json(rd.summary) if rd.summary.exists() else {}
    stopped: dict[str, Any] = {
        "reason": reason,
        "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if detail:
        stopped["detail"] = detail
    summary["stopped"] = stopped
    rd.write_json(rd.summary, summary)
    return summary


def clear_stop(rd: RunDir) -> None:
    """Forget the previous session's ``stopped`` record (a new session is starting)."""
    if not rd.summary.exists():
        return
    summary = rd.read_json(rd.summary)
    if isinstance(summary, dict) and "stopped" in summary:
        del summary["stopped"]
        rd.write_json(rd.summary, summary)
