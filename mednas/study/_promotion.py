"""Deferred promotion on the ladder: successive halving with paused trials, decided when a rung is complete.

Optuna's successive halving never pauses a trial, so at a rung's end it must decide at once, against the trials
that reached the rung *before it*: the first trials climb on almost nothing (measured on the x-ray demo: 5 of 18
reached the top where successive halving keeps 2). ASHA (Li et al., MLSys 2020) pauses instead and promotes a
paused trial as soon as it is within the best ``1/eta`` so far; measured with mednas it kept the quotas but let
early, mediocre candidates take the top rung's two places before the best one had finished its lower rung. With
``search.ladder.promotion: deferred`` (single objective, successive halving) mednas runs **synchronous successive
halving over asynchronous workers**:

- every trial **pauses** at the end of each rung below the top: it ends as pruned, with ``paused_at: k`` and its
  rung-``k`` weights kept in ``trials/<n>/`` (``rung-<k>.pt``, ``ladder.json``);
- rung ``k`` is **complete** once the search's candidates have all been sampled and finished (``--n-trials``) and
  no trial is running or queued at rung ``k`` or below. Then the best ``q = max(1, floor(n_k / eta))`` of the
  ``n_k`` candidates that completed it are promoted, one at a time, each as a **continuation**: a new Optuna
  trial with the paused trial's parameters (``enqueue_trial``) that takes over its files, replays its rungs and
  trains rung ``k + 1`` from its weights. Workers with nothing to do wait for the rung to complete, then run the
  continuations in parallel.

So exactly ``max(1, floor(n_k / eta))`` candidates leave rung ``k``, chosen among all of rung ``k`` (ties by
trial number), whatever the order in which workers finished them. A trial and its continuations are one candidate
(``ladder_origin``, the first trial's number): rung pools and quotas count candidates, not Optuna trials, and the
search's target counts new candidates only. Everything is read from the shared storage; decisions take the run
directory's ``ladder.lock``; a paused trial is continued only by a worker that can read its files (its run
directory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CONTINUES",
    "ENTERED",
    "LADDER_LOCK",
    "ORIGIN",
    "PAUSED",
    "enqueue_continuation",
    "is_continuation",
    "next_promotion",
    "origin",
    "rung_complete",
]

#: The run directory's lock (``RunDir.lock``) around a promotion: processes sharing the folder decide in turn, so
#: a quota is never over-filled by two workers promoting at the same instant. Workers in different run
#: directories (other machines) share only the storage, where such a race can let one extra trial climb.
LADDER_LOCK = "ladder"
#: User attribute of a trial that paused at the end of rung ``k`` (its weights kept for a later promotion).
PAUSED = "paused_at"
#: User attribute of a continuation: the paused trial whose climb it continues.
CONTINUES = "continues"
#: User attribute: the first trial of a candidate's chain of continuations (absent on that first trial).
ORIGIN = "ladder_origin"
#: User attribute: the highest rung a trial (or its enqueued continuation) has started training.
ENTERED = "rung_entered"


def origin(trial: Any) -> int:
    """The candidate a trial belongs to: the first trial of its chain of continuations."""
    return int(trial.user_attrs.get(ORIGIN, trial.number))


def is_continuation(trial: Any) -> bool:
    """Whether a trial continues a paused one (it is not a new candidate)."""
    return CONTINUES in trial.user_attrs


def _rung_pool(trials: Sequence[Any], k: int) -> dict[int, float]:
    """Candidate -> its primary value at rung ``k``, over every trial that completed rung ``k`` (failed ones out)."""
    from optuna.trial import TrialState

    pool: dict[int, float] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            continue
        values = (t.user_attrs.get("rung_values") or {}).get(str(k))
        if values:
            value = float(values[0])
            pool[origin(t)] = value if math.isfinite(value) else math.nan
    return pool


def _left_rung(trials: Sequence[Any], k: int) -> set[int]:
    """The candidates that left rung ``k`` for a higher one (running, waiting, finished or failed there)."""
    return {origin(t) for t in trials if int(t.user_attrs.get(ENTERED, -1)) > k}


def _rung_of(trial: Any) -> int:
    """The rung a running or queued trial trains (a new candidate: 0; a continuation: the one it climbed to)."""
    return int(trial.user_attrs.get(ENTERED, 0))


def rung_complete(trials: Sequence[Any], k: int) -> bool:
    """Whether no trial is running or queued at rung ``k`` or below (the caller knows every candidate is in)."""
    from optuna.trial import TrialState

    active = (TrialState.RUNNING, TrialState.WAITING)
    return not any(t.state in active and _rung_of(t) <= k for t in trials)


def _promotable(trials: Sequence[Any], k: int, candidate: int, eta: int, maximize: bool) -> bool:
    """Fewer than ``q = max(1, floor(n/eta))`` candidates left rung ``k``, and ``candidate`` is within the best
    ``q`` of the ``n`` that completed it (an undefined value ranks last; ties by trial number)."""
    pool = _rung_pool(trials, k)
    quota = max(1, len(pool) // eta)
    left = _left_rung(trials, k)
    if candidate not in pool or candidate in left or len(left) >= quota:
        return False

    def key(item: tuple[int, float]) -> tuple[float, int]:
        value = item[1]
        if not math.isfinite(value):
            return (math.inf, item[0])
        return (-value if maximize else value, item[0])

    ranked = [c for c, _ in sorted(pool.items(), key=key)]
    return ranked.index(candidate) < quota


def next_promotion(study: Any, trial_dir: Any, eta: int, n_rungs: int) -> tuple[Any, int] | None:
    """The next paused trial to promote, with its rung: on a complete rung (:func:`rung_complete`), the best of
    its candidates that has not climbed while the rung's quota is not filled. Call it once every candidate of the
    search has finished (before that no rung is complete).

    ``trial_dir(n)`` is trial ``n``'s folder in this worker's run directory: a paused trial whose files are not
    there (another machine's run directory) is left to the worker that has them.
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    maximize = study.directions[0] == StudyDirection.MAXIMIZE
    paused = [t for t in trials if t.state == TrialState.PRUNED and PAUSED in t.user_attrs]
    for k in range(n_rungs - 1):
        if not rung_complete(trials, k):
            break  # a higher rung cannot be complete either
        at_k = [t for t in paused if int(t.user_attrs[PAUSED]) == k]
        for t in sorted(at_k, key=lambda t: t.number):
            if not _promotable(trials, k, origin(t), eta, maximize):
                continue
            folder = Path(trial_dir(t.number))
            if (folder / "ladder.json").is_file() and (folder / f"rung-{k}.pt").is_file():
                return t, k
    return None


def enqueue_continuation(study: Any, paused: Any, k: int) -> None:
    """Queue the continuation of ``paused`` from rung ``k + 1`` (its parameters fixed; counted as having left
    rung ``k`` from now on, so no other worker promotes it again)."""
    study.enqueue_trial(
        dict(paused.params),
        user_attrs={CONTINUES: paused.number, ORIGIN: origin(paused), ENTERED: k + 1},
        skip_if_exists=False,
    )
