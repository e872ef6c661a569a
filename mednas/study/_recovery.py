"""Crashed and preempted workers: find their trials, fail them, and retry each a bounded number of times.

RDB storages (SQLite, PostgreSQL, MySQL) use Optuna's own heartbeats and retry callback. The journal-file
storage has no heartbeat in Optuna, so mednas keeps one in a user attribute while a trial runs. On any storage,
a RUNNING trial whose worker process on this host no longer exists is failed at once (a SIGKILLed search
continues immediately when re-run). A retried trial carries ``retry_of`` (the original trial number) and
``retry_count``; the trial that was failed gets why in its record (the process that ran it cannot write it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mednas.rundir import RunDir

logger = logging.getLogger("mednas.study")

__all__ = ["Heartbeat", "MAX_RETRY", "host_tag", "recover_stale_trials", "retried_trials", "retry_of"]

#: Retries of one original trial before it is left failed.
MAX_RETRY = 2
#: Seconds between heartbeats, and how long one may be missing, for storages without Optuna heartbeats.
HEARTBEAT_INTERVAL = 10.0
HEARTBEAT_GRACE = 60.0


def host_tag() -> str:
    """A short hash of this host's name (trials record it; the name itself is not written)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_optuna_heartbeat(study: Any) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def retry_of(frozen: Any) -> int | None:
    """The original trial number a trial retries (mednas's or Optuna's retry bookkeeping), else None."""
    if "retry_of" in frozen.user_attrs:
        return int(frozen.user_attrs["retry_of"])
    system = getattr(frozen, "system_attrs", None)
    if system is None and hasattr(frozen, "_trial_id"):  # a live Trial: read its stored system attributes
        system = frozen.study._storage.get_trial_system_attrs(frozen._trial_id)
    if system and "failed_trial" in system:
        return int(system["failed_trial"])
    return None


def retried_trials(trial: Any, study: Any = None) -> list[int]:
    """The trials a retry repeats, the latest first (the one it directly replaces, ..., the original); [] if none.

    ``trial`` is a live trial, or a frozen one of ``study``.

    Optuna's heartbeat retries list them (system attribute ``retry_history``); mednas's own retries name only the
    original, so its later retries are found by their ``retry_of``. A resumed ladder trial takes over the files of
    the latest of them that left any (:mod:`mednas.study._ladder`).
    """
    original = retry_of(trial)
    if original is None:
        return []
    system = getattr(trial, "system_attrs", None)
    if system is None and hasattr(trial, "_trial_id"):  # a live Trial: read its stored system attributes
        system = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    history = [int(n) for n in (system or {}).get("retry_history") or []]
    if history:
        return sorted(set(history) | {original}, reverse=True)
    earlier = {
        t.number
        for t in (study or trial.study).get_trials(deepcopy=False)
        if t.number < trial.number and t.user_attrs.get("retry_of") == original
    }
    return sorted(earlier | {original}, reverse=True)


def _retry(study: Any, frozen: Any, reason: str, run_dir: RunDir | None) -> bool:
    from optuna.trial import TrialState

    try:
        if not study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL):
            return False
    except Exception:  # noqa: BLE001 - another worker failed it first (UpdateFinishedTrialError and kin)
        return False
    if run_dir is not None:
        _record_failure(run_dir, frozen, reason)
    count = int(frozen.user_attrs.get("retry_count", 0))
    original = retry_of(frozen)
    original = frozen.number if original is None else original
    if count >= MAX_RETRY:
        logger.warning("trial %d: %s; not retried (retried %d times already)", frozen.number, reason, count)
        return True
    from mednas.study._promotion import CONTINUES, ENTERED, ORIGIN

    # A retried ladder continuation stays one: the same candidate, at the same rung (mednas.study._promotion).
    ladder = {k: frozen.user_attrs[k] for k in (CONTINUES, ORIGIN, ENTERED) if k in frozen.user_attrs}
    study.enqueue_trial(
        frozen.params,
        user_attrs={"retry_of": original, "retry_count": count + 1, **ladder},
        skip_if_exists=False,
    )
    logger.warning("trial %d: %s; failed and queued for retry (of trial %d)", frozen.number, reason, original)
    return True


def _record_failure(run_dir: RunDir, frozen: Any, reason: str) -> None:
    """Write why a trial whose worker is gone was failed into its record, when it ran in this run directory.

    A trial of another machine's run directory (a shared storage, separate run directories) has no folder here
    and gets no record; its own machine's readers degrade as for any trial without one.
    """
    from mednas.rundir import TrialRecord

    if not run_dir.trial_dir(frozen.number).is_dir():
        return
    record = run_dir.trial(frozen.number) or TrialRecord(trial=frozen.number)
    known = {"seed": frozen.user_attrs.get("seed"), "retry_of": retry_of(frozen)}
    record = record.updated(**{k: v for k, v in known.items() if v is not None})
    try:
        run_dir.write_trial(record.updated(state="failed", reason=reason))
    except OSError as exc:  # recovery goes on; the storage says the trial failed
        logger.warning("trial %d: its record could not be written (%s)", frozen.number, exc)


def recover_stale_trials(study: Any, *, run_dir: RunDir | None = None, grace: float = HEARTBEAT_GRACE) -> int:
    """Fail and retry RUNNING trials whose worker is gone; return how many were recovered.

    A trial is stale when its worker process on this host no longer exists, or (on storages without Optuna
    heartbeats) when its ``heartbeat`` attribute is older than ``grace`` seconds. With ``run_dir``, a failed
    trial's record (``state: failed``, ``reason``) says why.
    """
    from optuna.trial import TrialState

    host = host_tag()
    optuna_heartbeat = _has_optuna_heartbeat(study)
    now = time.time()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = int(t.user_attrs.get("pid", -1))
        if t.user_attrs.get("host") == host and pid > 0 and pid != os.getpid() and not _pid_alive(pid):
            n += _retry(study, t, f"its worker (pid {pid}) died (killed or crashed)", run_dir)
            continue
        if optuna_heartbeat:
            continue  # Optuna fails and retries these itself (RetryHeartbeatStaleTrialCallback)
        beat = t.user_attrs.get("heartbeat")
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        if beat is not None and now - float(beat) > grace:
            n += _retry(study, t, f"no heartbeat for {now - float(beat):.0f} s (worker lost)", run_dir)
    return n


class Heartbeat:
    """Record ``heartbeat`` (a timestamp) on a running trial every few seconds, in a daemon thread.

    Only needed for storages without Optuna heartbeats (the journal file); harmless elsewhere.

    Example:
        >>> with Heartbeat(trial):  # doctest: +SKIP
        ...     train()
    """

    def __init__(self, trial: Any, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.trial = trial
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - a missed beat must never kill the trial
                logger.debug("heartbeat not recorded", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.trial.set_user_attr("heartbeat", time.time())
        if not _has_optuna_heartbeat(self.trial.study):
            self._thread = threading.Thread(target=self._beat, name="mednas-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
