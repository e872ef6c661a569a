"""The search's live progress: trial n of N, the best so far, the running trial's epoch, elapsed and remaining.

The bar is :class:`mednas._progress.ProgressBar` (log lines print above it); what it shows, and the structured log
line of every finished trial, are the search's own. A finished trial is described from the study storage (state,
values, the ranking's user attributes) and from its record (family, size, reasons: :meth:`RunDir.trial`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

from mednas._progress import ProgressBar
from mednas.rundir import RunDir, TrialRecord, best_trials, pareto_front

logger = logging.getLogger("mednas.study")

__all__ = ["SearchProgress", "count_finished", "duration"]


def count_finished(study: Any) -> int:
    """Trials that count towards the search's target: complete and pruned (infeasible ones included); a ladder
    trial continuing a paused one (:mod:`mednas.study._promotion`) is not a new candidate and does not count."""
    from optuna.trial import TrialState

    from mednas.study._promotion import is_continuation

    return sum(
        not is_continuation(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )


def duration(seconds: float | None) -> str:
    """Format seconds as ``42s``, ``3m05s`` or ``2h04m`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class SearchProgress:
    """Live progress of a search: trial n of N, best so far, current trial's epoch, elapsed and remaining.

    On a terminal it is a progress bar on stderr (log lines print above it); every finished trial is also logged
    (``mednas.study``, INFO) with structured fields (``trial``, ``state``, ``value``, ``best``, ``finished``,
    ``total``, ``elapsed_s``, ``remaining_s``), so ``--log-json``, ``search.log`` and runs without a terminal
    see the same progress. The remaining time is the finished trials' pace in this session (trials finished by
    other workers included) times the trials still to go.

    Args:
        total: The trial target.
        done: Trials finished before this session.
        enabled: Show the bar (``MEDNAS_NO_PROGRESS=1`` also turns it off); the log lines are written regardless.
        study: The search's study (counts and the best trial come from it).
        run_dir: The run directory (a finished trial's record comes from it).
    """

    _FORMAT = (
        "{desc}: {n_fmt}/{total_fmt} trials |{bar}| "  # + best, elapsed, remaining (set on each refresh)
    )

    def __init__(self, total: int, done: int, *, enabled: bool, study: Any, run_dir: RunDir) -> None:
        self.study, self.rd = study, run_dir
        self.total = total
        self.done = min(done, total)
        self._t0 = time.monotonic()
        self._t_ready = self._t0  # end of data preparation: the pace is measured from here
        self._trials_started: float | None = None
        self._done_at_start = self.done
        self._best = ""
        self._best_trial: Any = None
        self.bar = ProgressBar(
            "search",
            total=total,
            initial=self.done,
            enabled=enabled,
            bar_format=self._FORMAT,
            above_logs=True,
        )
        self._update_best()
        self._set_format()

    # -- estimates

    def elapsed(self) -> float:
        """Seconds since this search session started."""
        return time.monotonic() - self._t0

    def remaining(self) -> float | None:
        """Estimated seconds until ``total`` trials have finished (None until one finished in this session)."""
        finished = self.done - self._done_at_start
        if self.done >= self.total:
            return 0.0
        if finished <= 0 or self._trials_started is None:
            return None
        pace = (time.monotonic() - self._trials_started) / finished
        return pace * (self.total - self.done)

    def _mark_trials_started(self) -> None:
        if self._trials_started is None:
            self._trials_started = self._t_ready

    # -- display

    def _update_best(self) -> None:
        try:
            best = best_trials(self.study, 1)
        except Exception:  # noqa: BLE001 - a storage hiccup must not stop the search; the next trial retries
            return
        if best:
            extra = (
                f", Pareto front {len(pareto_front(self.study))}" if len(self.study.directions) > 1 else ""
            )
            self._best_trial = best[0]
            self._best = f"best {best[0].values[0]:.4f} (trial {best[0].number}){extra}"

    def _set_format(self) -> None:
        """Put the best so far, elapsed and remaining time after the counts."""
        if not self.bar.enabled:
            return
        remaining = self.remaining()
        parts = [
            p
            for p in (
                self._best,
                f"{duration(self.elapsed())} elapsed",
                f"~{duration(remaining)} left" if remaining is not None and self.done < self.total else "",
            )
            if p
        ]
        # In the format itself, not tqdm's postfix (which tqdm prefixes with ", ").
        self.bar.set_format(self._FORMAT + ", ".join(parts).replace("{", "{{").replace("}", "}}"))

    # -- events

    def stage(self, name: str, done: int, total: int) -> None:
        """Show a preparation stage (validation, fingerprint, proxy cache)."""
        self._t_ready = time.monotonic()
        self._set_format()
        self.bar.stage(name, done, total)

    def epoch(self, trial: int, epoch: int, epochs: int) -> None:
        """Show the running trial's epoch."""
        self._mark_trials_started()
        logger.debug(
            "trial %d: epoch %d/%d",
            trial,
            epoch,
            epochs,
            extra={"trial": trial, "epoch": epoch, "epochs": epochs},
        )
        self._set_format()
        self.bar.describe(f"trial {trial} epoch {epoch}/{epochs}")

    def trial_done(self, frozen: Any) -> None:
        """Count finished trials (the study's: other workers finish trials too) and log the one that ended here."""
        if frozen is None and not self.bar.enabled:
            return  # a waiting worker's poll, with nothing to show: spare the storage the queries
        self._mark_trials_started()
        with contextlib.suppress(Exception):  # a storage hiccup: keep the previous count
            self.done = min(self.total, count_finished(self.study))
        self._update_best()
        self.bar.set_done(self.done)
        if frozen is not None:
            self._log_trial(frozen)
        self._set_format()
        self.bar.refresh(force=frozen is not None)

    def _log_trial(self, frozen: Any) -> None:
        """Log one finished trial: a line to read, and the structured fields of ``--log-json``."""
        rec = self.rd.trial(frozen.number)
        state, what, value = _describe(frozen, rec)
        remaining = self.remaining()
        best = self._best_trial
        family = rec.family if rec is not None and rec.family else frozen.params.get("family")
        fields = {
            "event": "trial",
            "trial": frozen.number,
            "state": state.split(" ")[0],
            "family": family,
            "value": value,
            "values": list(frozen.values) if frozen.values and state.startswith("complete") else None,
            "best": float(best.values[0]) if best is not None else None,
            "best_trial": best.number if best is not None else None,
            "finished": self.done,
            "total": self.total,
            "elapsed_s": round(self.elapsed(), 1),
            "remaining_s": round(remaining, 1) if remaining is not None else None,
        }
        tail = f"{self.done}/{self.total} finished, {duration(self.elapsed())} elapsed" + (
            f", ~{duration(remaining)} left" if remaining is not None and self.done < self.total else ""
        )
        logger.info(
            "trial %d %s%s; %s%s",
            frozen.number,
            state,
            f": {what}" if what else "",
            f"{self._best}; " if self._best else "",
            tail,
            extra=fields,
        )

    def close(self) -> None:
        """Close the bar and give console logging back its handlers."""
        self._set_format()
        self.bar.describe(None)
        self.bar.close()


def _describe(frozen: Any, rec: TrialRecord | None) -> tuple[str, str, float | None]:
    """A finished trial's state (``complete (violates a constraint)``, ``pruned``, ...), what to say of it, and the
    value its log line carries (the objective, or the last epoch's of a pruned trial)."""
    from optuna.trial import TrialState

    attrs = frozen.user_attrs
    value = float(frozen.values[0]) if frozen.values else None
    if frozen.state == TrialState.COMPLETE:
        return *_describe_complete(frozen, rec), value
    if frozen.state == TrialState.PRUNED and "infeasible" in attrs:
        return "infeasible", str(attrs["infeasible"]), value
    if frozen.state == TrialState.PRUNED:
        return _describe_pruned(frozen, rec)
    if frozen.state == TrialState.FAIL:
        return "failed", str((rec.reason if rec is not None else None) or "see its log.txt"), value
    return frozen.state.name.lower(), "", value


def _describe_complete(frozen: Any, rec: TrialRecord | None) -> tuple[str, str]:
    attrs = frozen.user_attrs
    state = "complete" if attrs.get("feasible", True) is not False else "complete (violates a constraint)"
    params = rec.params if rec is not None else None
    values = ", ".join(f"{v:.4f}" for v in frozen.values or [])
    what = f"objective {values}" + (f", {params:,} parameters" if params else "")
    if "duplicate_of" in attrs:
        what += f" (same candidate as trial {attrs['duplicate_of']})"
    elif attrs.get("learned") is False:
        reason = rec.not_learning if rec is not None else None
        what += "; flagged: never started learning" + (f" ({reason})" if reason else "")
    return state, what


def _describe_pruned(frozen: Any, rec: TrialRecord | None) -> tuple[str, str, float | None]:
    rungs = frozen.user_attrs.get("rung_values")
    if rungs:  # a ladder trial, judged at its rungs' ends
        k = max(rungs, key=int)
        last = rungs[k][0] if rungs[k] else None
        what = f"at the end of rung {k}" + (
            f" (objective {last:.4f})" if isinstance(last, (int, float)) else ""
        )
        return "pruned", what, float(last) if isinstance(last, (int, float)) else None
    history = frozen.intermediate_values or frozen.user_attrs.get("primary_history") or {}
    last = history[max(history, key=int)] if history else None
    what = f"at epoch {len(history)}" + (f" (objective {last:.4f})" if isinstance(last, (int, float)) else "")
    if frozen.user_attrs.get("learned") is False:
        what += f": not learning ({rec.not_learning if rec is not None else None})"
    return "pruned", what, float(last) if isinstance(last, (int, float)) else None
