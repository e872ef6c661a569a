"""``summary.json``: the study's state and best candidate, rebuilt from the storage and the trial records.

It is rewritten after every trial by whichever worker finished it, so ``mednas status`` and the report read
current numbers even while a search runs in another process. The storage says which trials there are, their state,
values and ranking; what a trial is (family, size, metrics, operating point) comes from its record
(:meth:`mednas.rundir.RunDir.trial`). Every write goes through :meth:`mednas.rundir.RunDir.update_summary`, under
its lock: the keys other steps own (``proxy_fidelity``, ``retrain``, ``export``, ``stopped``) survive a rewrite.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from mednas.config import TaskConfig
from mednas.rundir import RunDir, TrialRecord
from mednas.rundir._ranking import best_trials, is_feasible, pareto_front, reevaluations
from mednas.study._promotion import is_continuation

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
#: Keys of ``summary.json`` that other steps own (retrain's ``proxy_fidelity`` and ``retrain``, export's
#: ``export``) or that record how a session ended (``stopped``: a ``--workers`` child or a joining process may
#: rewrite the summary after the session's end was recorded; the next session clears it when it starts).
OTHERS_KEYS = ("proxy_fidelity", "retrain", "export", "stopped")


def build_summary(
    task: TaskConfig, rd: RunDir, study: Any, plan: Any | None = None, target: int | None = None
) -> dict[str, Any]:
    """Assemble the summary (see DESIGN.md for the keys the checks rely on), with the keys of the summary on disk
    that other steps own."""
    return _carry_over(_search_summary(task, rd, study, plan, target), rd.summary(), target)


def _search_summary(
    task: TaskConfig, rd: RunDir, study: Any, plan: Any | None, target: int | None
) -> dict[str, Any]:
    """What the search itself knows: counts, families, proxy, data, the Pareto front, the best trial."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    # Candidates sampled per family: a ladder continuation is its paused trial's candidate, not a new sample.
    families = Counter(
        t.params["family"] for t in trials if t.params.get("family") and not is_continuation(t)
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
    if task.search.fidelity == "ladder":
        summary.update(_ladder_summary(task, rd, plan, trials))
    if task.objective.constraints:
        summary["constraints"] = [str(c) for c in task.objective.constraints]
        summary["n_trials"]["infeasible_after_training"] = sum(
            1 for t in trials if t.state == TrialState.COMPLETE and not is_feasible(t)
        )
    if task.objective.measures_latency:
        summary["latency"] = _latency_summary(task, rd, trials)
    if len(study.directions) > 1:
        summary["pareto_front"] = [_front_entry(rd, t) for t in pareto_front(study)]
    best = best_trials(study, 1)
    if best:
        summary["best"] = _best_summary(rd, best[0])
    reevaluation = _reevaluation_summary(task, study, trials)
    if reevaluation is not None:
        summary["reevaluation"] = reevaluation
    return summary


def _ladder_summary(task: TaskConfig, rd: RunDir, plan: Any | None, trials: list[Any]) -> dict[str, Any]:
    """``summary.json`` ``fidelity``, ``ladder`` (rungs, eta, brackets) and ``compute`` (from the trial records)."""
    from mednas.study._ladder import compute_summary, ladder_summary

    full = plan.full_shape if plan is not None else task.training.shape
    records = [rec for rec in (rd.trial(t.number) for t in trials) if rec is not None]
    return {
        "fidelity": "ladder",
        "ladder": ladder_summary(task, full),
        "compute": compute_summary(records),
    }


def _latency_summary(task: TaskConfig, rd: RunDir, trials: list[Any]) -> dict[str, Any]:
    """``summary.json`` ``latency``: how candidates are timed, and the hardware and threads the figures were taken on.

    ``taken_on`` lists each (hardware, device, threads) the trial records' figures name, with how many figures each;
    ``figures`` counts the figures timed and those reused from the run's cache (``cache/latency.json``).
    """
    cfg = task.objective.latency
    taken: Counter[tuple[str, str, int]] = Counter()
    cached = 0
    for t in trials:
        rec = rd.trial(t.number)
        figure = rec.latency if rec is not None and rec.duplicate_of is None else None
        if not isinstance(figure, dict):
            continue
        taken[(str(figure.get("hardware")), str(figure.get("device")), int(figure.get("threads") or 1))] += 1
        cached += bool(figure.get("cached"))
    return {
        "target": task.target,
        **cfg.model_dump(mode="json"),
        "taken_on": [
            {"hardware": hw, "device": dev, "threads": threads, "figures": n}
            for (hw, dev, threads), n in taken.most_common()
        ],
        "figures": {"measured": sum(taken.values()) - cached, "cached": cached},
    }


def _family(t: Any, rec: TrialRecord | None) -> str | None:
    """A trial's family: from its record, else (a trial of another machine's run directory) what it sampled."""
    return rec.family if rec is not None and rec.family else t.params.get("family")


def _front_entry(rd: RunDir, t: Any) -> dict[str, Any]:
    """One trial of ``summary.json`` ``pareto_front``: its values from the storage, family and size from its record."""
    rec = rd.trial(t.number)
    return {
        "trial": t.number,
        "values": list(t.values),
        "spec_hash": t.user_attrs.get("spec_hash"),
        "family": _family(t, rec),
        "params": rec.params if rec is not None else None,
    }


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
        # Ladder trials continuing a paused one (mednas.study._promotion): the same candidate climbing on, in the
        # counts above but not in the target, which counts candidates.
        "continuations": sum(1 for t in trials if is_continuation(t)),
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
    """``summary.json`` ``best``: the best trial's values and ranking from the storage, the rest from its record."""
    rec = rd.trial(t.number) or TrialRecord(trial=t.number)
    ladder = {"rung_reached": rec.rung_reached, "shape": rec.shape} if rec.fidelity == "ladder" else {}
    return {
        **ladder,
        "trial": t.number,
        "values": list(t.values),
        "spec_hash": t.user_attrs.get("spec_hash"),
        "family": _family(t, rec),
        "target": rec.target,
        "params": rec.params,
        "macs": rec.macs,
        "learned": t.user_attrs.get("learned"),
        "proxy_mean": t.user_attrs.get("proxy_mean"),
        "proxy_std": t.user_attrs.get("proxy_std"),
        "metrics": rec.metrics if rec.metrics is not None else {},
        "operating_point": rec.operating_point,
        "loss": rec.loss,
        "sampling": rec.sampling,
        "constraints": rec.constraints,
    }


def _carry_over(summary: dict[str, Any], previous: dict[str, Any], target: int | None) -> dict[str, Any]:
    """``summary`` with the keys of the summary on disk (``previous``) that other steps own, and its trial target
    when this writer has none of its own (``target`` None: a process that does not know the session's target)."""
    for key in OTHERS_KEYS:
        if key in previous:
            summary[key] = previous[key]
    if target is None and isinstance(previous.get("n_trials"), dict) and previous["n_trials"].get("target"):
        summary["n_trials"]["target"] = previous["n_trials"]["target"]
    return summary


def _reevaluation_summary(task: TaskConfig, study: Any, trials: list[Any]) -> dict[str, Any] | None:
    """``summary.json`` ``reevaluation``: who was re-evaluated, the means, and what it cost."""
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
    """Build the summary and write ``summary.json`` (atomically, under its lock; other steps' keys kept)."""
    fresh = _search_summary(task, rd, study, plan, target)
    return rd.update_summary(lambda previous: _carry_over(fresh, previous, target))


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
    stopped: dict[str, Any] = {
        "reason": reason,
        "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if detail:
        stopped["detail"] = detail
    return rd.update_summary(stopped=stopped)


def clear_stop(rd: RunDir) -> None:
    """Forget the previous session's ``stopped`` record (a new session is starting)."""
    if rd.summary_path.exists() and "stopped" in rd.summary():
        rd.update_summary(stopped=None)
