"""``mednas status``: a run's trials table and best candidate, live, also while a search runs in another process.

One rule says where each number comes from. The Optuna storage is live, so it gives a trial's state, objective
values, intermediate values (the epoch a running trial is at), its worker's heartbeat and its start and end; the
trial's record (:class:`mednas.rundir.TrialRecord`, ``trials/<n>/metrics.json``) gives everything else: family,
parameters, intervals, epochs, duration, reason and flags. A trial without a record (one still running, or one
from another machine's run directory) shows what the storage has. Without a reachable storage the records alone
are shown. The summary and the retrained candidates are read through :class:`mednas.rundir.RunDir` too. Nothing
is written.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from pathlib import Path
from typing import Any

from mednas.errors import RunDirError
from mednas.io._scrub import redact_in_text, redact_url
from mednas.rundir import RunDir, TrialRecord

logger = logging.getLogger(__name__)

__all__ = ["format_status", "latency_setting", "read_status"]

_STATE_ORDER = ("running", "waiting", "complete", "pruned", "infeasible", "failed")


def read_status(
    run_dir: str | os.PathLike[str],
    *,
    storage: str | None = None,
    study_name: str | None = None,
) -> dict[str, Any]:
    """Collect a run's live state as a JSON-ready mapping.

    Args:
        run_dir: Run directory of a search.
        storage: Optuna storage URL the search used (default: ``study.db`` in the run directory, if present).
        study_name: Study name (default: the one ``summary.json`` records, else the task name).

    Returns:
        ``{"run_dir", "task", "study", "storage", "source", "objective", "counts", "target", "finished",
        "running", "stopped", "elapsed_s", "remaining_s", "best", "trials": [...], "retrain": [...],
        "proxy_fidelity", "latency" (how candidates are timed, on what), "simulated_data", "updated"}``; each
        trial has ``number``, ``state``, ``family``, ``params``, ``objective``, ``ci95``, ``epoch``, ``epochs``,
        ``seconds``, ``reason``, ``learned``, ``sampled`` (Optuna's), ``lost`` (a running trial's worker is gone).

        ``running`` says whether a search is working on the run: a ``mednas search`` process on this host holds
        the run directory, or a running trial's worker is alive (its process on this host, or on another host one
        that cannot be shown dead). When it is not, ``stopped`` is ``summary.json``'s record of why the last
        session ended (``reason``: ``n_trials reached``, ``timeout reached``, ``interrupted`` or ``failed``;
        ``at``; ``detail``), or ``{"reason": "unknown", ...}`` for a search that was killed or crashed; and
        ``remaining_s`` is None.

    Raises:
        RunDirError: If ``run_dir`` is not a run directory.

    Example:
        >>> status = read_status("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> status["counts"]["complete"], status["best"]["trial"]  # doctest: +SKIP
    """
    rd = RunDir(run_dir)
    if not rd.root.is_dir() or not (
        rd.resolved_path.exists() or rd.summary_path.exists() or (rd.root / "trials").is_dir()
    ):
        raise RunDirError(f"{rd.root}: not a run directory (run `mednas search` first)")
    summary = _summary(rd)
    resolved = _resolved(rd)
    name = study_name or (summary.get("study") or {}).get("name") or resolved.get("name")
    url = storage or (rd.default_storage() if rd.study_db.exists() else None)
    study, storage_error = _open_study(url, name) if url and name else (None, None)
    epochs_total = _proxy_epochs(summary, resolved)
    now = _dt.datetime.now()
    trials = _merge_trials(rd, study, epochs_total, now, url)
    source = "storage" if study is not None else "records"
    rows = [trials[n] for n in sorted(trials)]
    counts = _counts(rows)
    target = (summary.get("n_trials") or {}).get("target") or ((resolved.get("search") or {}).get("n_trials"))
    finished = counts["complete"] + counts["pruned"] + counts["infeasible"]
    n_live, running = _liveness(rd, rows)
    elapsed = _busy_seconds(study, now) if study is not None else sum(r["seconds"] or 0.0 for r in rows)
    remaining = _remaining(rows, target, finished, n_live) if running else None
    stopped = None if running else _stopped(summary)
    objective = summary.get("objective") or {}
    return {
        "run_dir": str(rd.root),
        "task": summary.get("task") or resolved.get("name"),
        "study": name,
        "storage": redact_url(url) if url else None,
        "storage_error": storage_error,
        "source": source,
        "objective": {"names": objective.get("names") or [], "directions": objective.get("directions") or []},
        "counts": counts,
        "target": target,
        "finished": finished,
        "running": running,
        "stopped": stopped,
        "elapsed_s": elapsed,
        "remaining_s": remaining,
        "best": _best(summary, trials, objective.get("directions") or ["maximize"]),
        "trials": rows,
        "retrain": _retrain_rows(rd),
        "proxy_fidelity": summary.get("proxy_fidelity"),
        "latency": summary.get("latency"),
        "simulated_data": summary.get("simulated_data"),
        "updated": now.astimezone().isoformat(timespec="seconds"),
    }


def _open_study(url: str, name: str) -> tuple[Any, str | None]:
    """The study in the storage, or None and why it could not be loaded (status then reads the records alone)."""
    try:
        return _load_study(url, name), None
    except Exception as exc:  # noqa: BLE001 - status must work from the records when the storage is away
        # A driver's message may quote the URL, password included.
        message = redact_in_text(str(exc).splitlines()[0] if str(exc) else "", url)
        storage_error = f"{type(exc).__name__}: {message}"
        logger.debug("status: storage %s unavailable: %s", redact_url(url), storage_error)
        return None, storage_error


def _merge_trials(
    rd: RunDir,
    study: Any,
    epochs_total: int | None,
    now: _dt.datetime,
    url: str | None,
) -> dict[int, dict[str, Any]]:
    """One row per trial: from the storage (with its record) where the study is reachable, else from the record.

    A trial folder without a readable record yet is a trial that is running (or whose worker died before it
    wrote one): without the storage it shows as running.
    """
    records = rd.trials()
    trials: dict[int, dict[str, Any]] = {}
    journal = url is not None and (url.startswith("journal://") or url.endswith((".log", ".journal")))
    if study is not None:
        for ft in study.get_trials(deepcopy=False):
            row = _from_storage(ft, records.get(ft.number), epochs_total, now)
            row["lost"] = _lost(ft, journal) if row["state"] == "running" else False
            trials[ft.number] = row
    for number in rd.trial_numbers():
        if number not in trials:
            trials[number] = _from_record(records.get(number) or TrialRecord(trial=number), epochs_total)
    return trials


def _liveness(rd: RunDir, rows: list[dict[str, Any]]) -> tuple[int, bool]:
    """Running trials whose worker is alive, and whether a search works on the run (else mark running rows lost)."""
    # Without the storage a record saying "running" may be a dead worker's: only the run directory's lock tells.
    live_trials = [r for r in rows if r["state"] == "running" and r.get("lost") is False]
    running = bool(live_trials) or _held_by_a_search(rd)
    for r in rows:
        if r["state"] == "running" and not running:
            r["lost"] = True  # nothing works on the run: this trial's worker is gone (retried on continuing)
    return len(live_trials), running


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Trials per state, and how many complete or pruned ones never started learning."""
    counts = {s: 0 for s in _STATE_ORDER}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    # A subset of complete and pruned: trials flagged as never started learning.
    counts["not_learning"] = sum(
        1 for r in rows if r["state"] in ("complete", "pruned") and r.get("learned") is False
    )
    return counts


def _stopped(summary: dict[str, Any]) -> dict[str, Any]:
    """Why the last session ended, as ``summary.json`` records it, or ``unknown`` for a killed or crashed one."""
    stopped = summary.get("stopped") if isinstance(summary.get("stopped"), dict) else None
    return stopped or {
        "reason": "unknown",
        "detail": "no search process is alive and none recorded how it "
        "ended (killed, crashed, or a run of an earlier mednas)",
    }


def format_status(status: dict[str, Any], *, max_rows: int | None = None) -> str:
    """Render :func:`read_status` output as the text ``mednas status`` prints.

    Args:
        status: What :func:`read_status` returned.
        max_rows: Show at most this many trial rows (running trials, the best and the latest first kept).
    """
    names = status["objective"]["names"] or ["objective"]
    lines = _head_lines(status, names)
    best = status.get("best")
    lines.append(_best_line(best, names))
    lines += _trial_lines(status["trials"], best["trial"] if best else None, max_rows)
    lines += _retrain_lines(status.get("retrain") or [], status.get("proxy_fidelity") or {})
    return "\n".join(lines)


def _head_lines(status: dict[str, Any], names: list[str]) -> list[str]:
    """The task, where the study lives and its objective, the progress line and whether the search runs."""
    directions = status["objective"]["directions"] or ["maximize"]
    head = f"mednas status: {status['task']} ({status['run_dir']})"
    if status.get("simulated_data"):
        head += "  [SIMULATED data]"
    where = status["storage"] or "no storage found (run-directory records only)"
    lines = [
        head,
        f"  study {status['study']} in {where}; objective "
        + ", ".join(f"{n} ({d})" for n, d in zip(names, directions)),
    ]
    if status.get("storage_error"):
        lines.append(
            f"  storage not readable ({status['storage_error']}); showing run-directory records only"
        )
    lines.append(f"  progress: {_progress(status)}")
    lines.append(f"  search: {_search_state(status)}")
    latency = status.get("latency")
    if isinstance(latency, dict):
        figures = latency.get("figures") or {}
        lines.append(
            f"  latency: {latency_setting(latency)}"
            + (f" (target {latency['target']})" if latency.get("target") else "")
            + f"; {figures.get('measured', 0)} timed, {figures.get('cached', 0)} reused from the run's cache"
        )
    return lines


def latency_setting(latency: dict[str, Any] | None) -> str:
    """How ``summary.json`` ``latency`` says candidates were timed, e.g. ``onnxruntime fp32, 1 thread, AMD EPYC``.

    The threads and hardware are those the figures were taken on (``taken_on``), else the settings; a GPU figure
    names the device instead of the threads. Empty for a run that times nothing (or an older one).
    """
    if not isinstance(latency, dict) or not latency.get("runtime"):
        return ""
    taken = [t for t in latency.get("taken_on") or [] if isinstance(t, dict)]
    device = str((taken[0].get("device") if taken else None) or latency.get("device") or "")
    threads = int((taken[0].get("threads") if taken else None) or latency.get("threads") or 1)
    parts = [f"{latency['runtime']} {latency.get('precision') or 'fp32'}"]
    parts.append(device if device.startswith("cuda") else f"{threads} thread{'s' if threads != 1 else ''}")
    if int(latency.get("batch") or 1) != 1:
        parts.append(f"batch {latency['batch']}")
    hardware = sorted({str(t["hardware"]) for t in taken if t.get("hardware")})
    if hardware:
        parts.append(" / ".join(hardware))
    return ", ".join(parts)


def _progress(status: dict[str, Any]) -> str:
    """``3/4 finished (2 complete, 1 pruned, ...), 1 running; elapsed 5m02s, ~2m00s left``."""
    c = status["counts"]
    target = status["target"]
    progress = f"{status['finished']}/{target} finished" if target else f"{status['finished']} finished"
    left = (
        f", ~{_duration(status['remaining_s'])} left"
        if status.get("running", True) and status.get("remaining_s")
        else ""
    )
    return (
        f"{progress} ({c['complete']} complete, {c['pruned']} pruned, {c['infeasible']} infeasible, "
        f"{c['failed']} failed"
        + (f"; {c['not_learning']} never started learning" if c.get("not_learning") else "")
        + f"), {c['running']} running"
        + (f", {c['waiting']} waiting" if c.get("waiting") else "")
        + f"; elapsed {_duration(status['elapsed_s'])}"
        + left
    )


def _best_line(best: dict[str, Any] | None, names: list[str]) -> str:
    """The best candidate so far: trial, family, parameters and objective values with the primary's interval."""
    if not best:
        return "  best so far: none (no trial has completed yet)"
    ci = best.get("ci95")
    ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci and None not in ci else ""
    return (
        f"  best so far: trial {best['trial']}, {best.get('family') or '?'}"
        + (f", {best['params']:,} parameters" if best.get("params") else "")
        + f": {names[0]} {best['values'][0]:.4f}{ci_text}"
        + (
            f"; other objectives {', '.join(f'{v:.4g}' for v in best['values'][1:])}"
            if len(best["values"]) > 1
            else ""
        )
    )


def _trial_lines(rows: list[dict[str, Any]], best: int | None, max_rows: int | None) -> list[str]:
    """The trials table (at most ``max_rows`` rows), preceded by a blank line; nothing without trials."""
    if not rows:
        return []
    shown = _pick_rows(rows, best, max_rows)
    table = [["trial", "state", "family", "params", "objective", "epochs", "seconds", "reason / note"]]
    for r in shown:
        table.append(
            [
                str(r["number"]),
                r["state"],
                r.get("family") or "",
                f"{r['params']:,}" if r.get("params") else "",
                _objective_cell(r),
                _epochs_cell(r),
                f"{r['seconds']:.1f}" if r.get("seconds") is not None else "",
                _note(r),
            ]
        )
    lines = ["", *_table(table)]
    if len(shown) < len(rows):
        lines.append(f"  ... {len(rows) - len(shown)} more trial(s); --all or --json lists every one")
    return lines


def _retrain_lines(retrain: list[dict[str, Any]], fid: dict[str, Any]) -> list[str]:
    """The retrained candidates' table and the proxy's rank agreement; nothing before a retraining."""
    if not retrain:
        return []
    table = [["trial", "state", "epoch", "val objective", "test objective", "seconds", "reason"]]
    for r in retrain:
        table.append(
            [
                str(r["trial"]),
                r["state"],
                _epochs_cell(r),
                _num(r.get("val")),
                _num(r.get("test")),
                f"{r['seconds']:.1f}" if r.get("seconds") is not None else "",
                (r.get("reason") or "")[:60],
            ]
        )
    lines = ["", "  retrain (full fidelity):", *_table(table, indent="    ")]
    if fid.get("kendall_tau") is not None:
        ceil = fid.get("seed_ceiling_tau")
        lines.append(
            f"    proxy fidelity: Kendall tau {fid['kendall_tau']:.2f} over {fid.get('n')} candidates "
            + (
                f"(seed-noise ceiling measured on this run: tau {ceil:.2f})"
                if ceil is not None
                else "(seed-noise ceiling not measured on this run: `mednas retrain RUN_DIR --seeds 2`)"
            )
        )
    return lines


# ------------------------------------------------------------------------------------------ reading


def _summary(rd: RunDir) -> dict[str, Any]:
    """The run's summary; ``{}`` while none is written or while a running search rewrites it (the next call reads it)."""
    try:
        return rd.summary()
    except RunDirError:
        return {}


def _resolved(rd: RunDir) -> dict[str, Any]:
    """The resolved task as a plain mapping (status only displays it); ``{}`` when missing or unreadable."""
    try:
        return rd.resolved()
    except RunDirError:
        return {}


def _proxy_epochs(summary: dict[str, Any], resolved: dict[str, Any]) -> int | None:
    """Epochs a trial trains when it is not pruned: the proxy's, or every rung's on the resolution ladder."""
    rungs = (summary.get("ladder") or {}).get("rungs")
    if rungs:
        return sum(int(r.get("epochs") or 0) for r in rungs) or None
    epochs = (summary.get("proxy") or {}).get("epochs") or (resolved.get("proxy") or {}).get("epochs")
    return int(epochs) if epochs else None


def _load_study(url: str, name: str) -> Any:
    """Open the study read-only: no table creation, no heartbeat, no migration."""
    import optuna

    path = None
    if url.startswith("journal://") or url.endswith((".log", ".journal")):  # as mednas.study parses it
        path = url[len("journal://") :] if url.startswith("journal://") else url
        path = path[1:] if path.startswith("//") else path
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(path)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        storage: Any = optuna.storages.JournalStorage(
            JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        )
    else:
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
            raise FileNotFoundError(url[len("sqlite:///") :])
        from mednas.rundir._storage import storage_engine_kwargs  # bounded waits on a silent server

        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=storage_engine_kwargs(url),
            skip_table_creation=True,
            skip_compatibility_check=True,
        )
    return optuna.load_study(study_name=name, storage=storage)


def _state(ft: Any) -> str:
    from optuna.trial import TrialState

    if ft.state == TrialState.PRUNED and "infeasible" in ft.user_attrs:
        return "infeasible"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }.get(ft.state, ft.state.name.lower())


def _from_storage(
    ft: Any, rec: TrialRecord | None, epochs_total: int | None, now: _dt.datetime
) -> dict[str, Any]:
    """A trial's row: the storage for what is live (state, values, intermediate values, start and end), the
    record for everything else; a trial without a record shows what the storage has (:func:`_unrecorded`)."""
    state = _state(ft)
    history = {int(k): float(v) for k, v in (ft.intermediate_values or {}).items()}
    if not history and ft.user_attrs.get("primary_history"):
        history = {int(k): float(v) for k, v in ft.user_attrs["primary_history"].items()}
    known = _recorded(rec) if rec is not None else _unrecorded(ft)
    start, end = ft.datetime_start, ft.datetime_complete
    seconds = known["seconds"]  # the trial's own measure; the storage's clock for a trial that has none yet
    if seconds is None and start is not None:
        seconds = ((end or now) - start).total_seconds()
    # A pruned trial carries its last intermediate value; only a complete trial has an objective.
    objective = float(ft.values[0]) if ft.values and state == "complete" else None
    reason = known["reason"]
    if state == "complete" and known["feasible"] is False:
        reason = reason or "violates a constraint: " + ", ".join(
            c["constraint"] for c in known["constraints"] if (c.get("violation") or 0) > 0
        )
    return {
        "number": ft.number,
        "state": state,
        "family": known["family"],
        "params": known["params"],
        "objective": objective,
        "values": list(ft.values) if ft.values and state == "complete" else None,
        "partial": history[max(history)] if history and objective is None else None,
        "ci95": known["ci95"],
        "epoch": max(history) if history else (known["epochs"] if state == "complete" else None),
        "epochs": known["epochs"] if state == "complete" and known["epochs"] else epochs_total,
        "best_epoch": known["best_epoch"],
        "seconds": seconds,
        "reason": reason,
        **{key: known[key] for key in _FLAGS},
        "started": start.astimezone().isoformat(timespec="seconds") if start else None,
        "sampled": dict(ft.params),
    }


#: Row fields that say what became of a trial, in the order ``--json`` lists them.
_FLAGS = ("learned", "not_learning", "proxy_mean", "feasible", "duplicate_of", "retry_of")


def _recorded(rec: TrialRecord) -> dict[str, Any]:
    """What a trial's record says about it beyond the storage's live state."""
    return {
        "family": rec.family,
        "params": rec.params,
        "ci95": ((rec.metrics or {}).get("objective") or {}).get("ci95"),
        "epochs": rec.epochs,
        "best_epoch": rec.best_epoch,
        "seconds": rec.seconds,
        "reason": rec.reason,
        "constraints": rec.constraints or [],
        "learned": rec.learned,
        "not_learning": rec.not_learning,
        "proxy_mean": getattr(rec, "proxy_mean", None),  # written by re-evaluation (not a declared field)
        "feasible": rec.feasible,
        "duplicate_of": rec.duplicate_of,
        "retry_of": rec.retry_of,
    }


def _unrecorded(ft: Any) -> dict[str, Any]:
    """What the storage knows of a trial without a record here: still running, or recorded on another machine.

    Only the attributes the search keeps in the storage are read (the sampled family, why a candidate was
    rejected, the ranking flags, twins and retries); the rest is unknown.
    """
    attrs = ft.user_attrs
    return {
        "family": ft.params.get("family"),
        "params": None,
        "ci95": None,
        "epochs": None,
        "best_epoch": None,
        "seconds": None,
        "reason": attrs.get("infeasible"),
        "constraints": [],
        "learned": attrs.get("learned"),
        "not_learning": None,
        "proxy_mean": None,
        "feasible": attrs.get("feasible"),
        "duplicate_of": attrs.get("duplicate_of"),
        "retry_of": attrs.get("retry_of"),
    }


def _from_record(rec: TrialRecord, epochs_total: int | None) -> dict[str, Any]:
    """A trial's row from its record alone (no storage): the last recorded epoch stands for a running one's."""
    history = rec.history or []
    values = rec.values
    state = rec.state
    known = _recorded(rec)
    return {
        "number": rec.trial,
        "state": state,
        "family": rec.family,
        "params": rec.params,
        "objective": float(values[0]) if values else None,
        "values": values,
        "partial": history[-1].get("value") if history and not values else None,
        "ci95": known["ci95"],
        "epoch": history[-1].get("epoch") if history else None,
        "epochs": rec.epochs if state == "complete" else epochs_total,
        "best_epoch": rec.best_epoch,
        "seconds": rec.seconds,
        "reason": rec.reason,
        **{key: known[key] for key in _FLAGS},
        "started": None,
        "sampled": None,
    }


def _held_by_a_search(rd: RunDir) -> bool:
    """Whether a ``mednas search`` process on this host holds the run (its shared lock on the marker).

    Probed with a non-blocking exclusive lock, released at once; a lock held by a process that died is
    released by the kernel, so a killed search reads as not running.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): only the trials' workers tell
        return False
    import errno

    try:
        fd = os.open(rd.marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _lost(ft: Any, journal: bool) -> bool:
    """Whether a RUNNING trial's worker is gone: its process on this host has exited, or (journal storage, where
    mednas keeps the heartbeat) its last heartbeat is older than the grace period. Elsewhere: not known, alive."""
    import time

    from mednas.study._recovery import HEARTBEAT_GRACE, _pid_alive, host_tag

    attrs = ft.user_attrs
    pid = int(attrs.get("pid", -1) or -1)
    if attrs.get("host") == host_tag() and pid > 0:
        return not _pid_alive(pid)
    beat = attrs.get("heartbeat")
    return journal and beat is not None and time.time() - float(beat) > HEARTBEAT_GRACE


def _busy_seconds(study: Any, now: _dt.datetime) -> float:
    """Wall-clock time during which at least one trial ran (sessions days apart don't count the gap)."""
    spans = sorted(
        (t.datetime_start, t.datetime_complete or now)
        for t in study.get_trials(deepcopy=False)
        if t.datetime_start is not None
    )
    total, cur_start, cur_end = 0.0, None, None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        total += (cur_end - cur_start).total_seconds()
    return total


def _remaining(rows: list[dict[str, Any]], target: int | None, finished: int, running: int) -> float | None:
    """Trials still to go times the mean duration of trials that trained, spread over the running workers."""
    if not target or finished >= target:
        return 0.0 if target else None
    trained = [
        r["seconds"]
        for r in rows
        if r["state"] in ("complete", "pruned") and r.get("seconds") and not r.get("duplicate_of")
    ]
    if not trained:
        return None
    per_trial = sum(trained) / len(trained)
    return per_trial * (target - finished) / max(1, running)


def _best(
    summary: dict[str, Any], trials: dict[int, dict[str, Any]], directions: list[str]
) -> dict[str, Any] | None:
    """Return the best trial so far.

    One objective: from the storage's rows, so it is current the moment a trial completes (``summary.json`` is
    rewritten only after the trial's callbacks). Several objectives: from ``summary.json`` (the search's Pareto rules).
    """
    sign = 1.0 if directions[0] == "maximize" else -1.0
    pool = [
        r
        for r in trials.values()
        if r["state"] == "complete"
        and r.get("objective") is not None
        and r.get("feasible") is not False
        and r.get("duplicate_of") is None
    ]
    # The search's rule (mednas.rundir.best_trials): candidates that never learned come last, then the objective
    # (the seed mean of candidates re-evaluated with extra seeds).
    live = min(
        pool,
        key=lambda r: (
            r.get("learned") is False,
            -sign * (r["proxy_mean"] if r.get("proxy_mean") is not None else r["objective"]),
            r["number"],
        ),
        default=None,
    )
    best = summary.get("best")
    if best and (len(directions) > 1 or live is None):
        row = trials.get(int(best["trial"]), {})
        metrics = best.get("metrics") or {}
        return {
            "trial": best["trial"],
            "values": best.get("values") or [],
            "family": best.get("family"),
            "params": best.get("params"),
            "target": best.get("target"),
            "spec_hash": best.get("spec_hash"),
            "ci95": (metrics.get("objective") or {}).get("ci95") or row.get("ci95"),
            "metrics": metrics,
        }
    if live is None:
        return None
    same = best if best and int(best["trial"]) == live["number"] else {}
    return {
        "trial": live["number"],
        "values": live.get("values") or [live["objective"]],
        "family": live.get("family"),
        "params": live.get("params"),
        "target": same.get("target"),
        "spec_hash": same.get("spec_hash"),
        "ci95": live.get("ci95"),
        "metrics": same.get("metrics") or {},
    }


def _retrain_rows(rd: RunDir) -> list[dict[str, Any]]:
    """One row per retrained candidate that has a record, by trial number."""
    rows = []
    for number, rec in rd.retrains().items():
        history = rec.get("history") or []
        val = (rec.get("val") or {}).get("objective")
        test = (((rec.get("test") or {}).get("metrics") or {}).get("objective") or {}).get("value")
        rows.append(
            {
                "trial": number,
                "state": rec.get("state"),
                "epoch": rec.get("epochs") or (len(history) or None),
                "epochs": rec.get("max_epochs") or rec.get("epochs"),
                "val": val,
                "test": test,
                "seconds": rec.get("seconds"),
                "reason": rec.get("reason"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------ formatting


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _num(v: Any, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _objective_cell(r: dict[str, Any]) -> str:
    if r.get("objective") is not None:
        return _num(r["objective"])
    if r.get("partial") is not None:
        return f"({_num(r['partial'])})"
    return ""


def _epochs_cell(r: dict[str, Any]) -> str:
    if r.get("epoch") is None:
        return ""
    return f"{r['epoch']}/{r['epochs']}" if r.get("epochs") else str(r["epoch"])


def _search_state(status: dict[str, Any]) -> str:
    """``running`` or ``stopped (timeout reached) at 2026-12-02 06:31:02+00:00``: the line under the progress."""
    if status.get("running", True):
        return "running"
    stopped = status.get("stopped") or {}
    reason = stopped.get("reason") or "unknown"
    if reason == "unknown":
        return "stopped (how is not recorded: killed or crashed?); run the same `mednas search` command to continue"
    detail = f": {stopped['detail']}" if stopped.get("detail") and reason in ("failed", "interrupted") else ""
    at = str(stopped.get("at") or "").replace("T", " ")
    return f"stopped ({reason}{detail})" + (f" at {at}" if at else "")


def _note(r: dict[str, Any]) -> str:
    notes = []
    if r.get("lost"):
        notes.append("its worker is gone; retried when the search continues")
    if r.get("duplicate_of") is not None:
        notes.append(f"same as trial {r['duplicate_of']}")
    if r.get("retry_of") is not None:
        notes.append(f"retry of trial {r['retry_of']}")
    if r.get("learned") is False and r["state"] == "complete":
        notes.append("never started learning")
    if r.get("proxy_mean") is not None:
        notes.append(f"seed mean {r['proxy_mean']:.4f}")
    if r.get("reason"):
        notes.append(str(r["reason"]))
    text = "; ".join(notes)
    return text if len(text) <= 70 else text[:67] + "..."


def _pick_rows(rows: list[dict[str, Any]], best: int | None, max_rows: int | None) -> list[dict[str, Any]]:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    keep = {r["number"] for r in rows if r["state"] in ("running", "waiting")}
    if best is not None:
        keep.add(best)
    for r in reversed(rows):
        if len(keep) >= max_rows:
            break
        keep.add(r["number"])
    return [r for r in rows if r["number"] in keep]


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
