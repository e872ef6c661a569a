"""Weight inheritance between candidates (``search.inherit``): a new candidate starts from a finished one's weights.

With ``search.inherit: true`` a trial does not start from its seeded initialisation alone: the finished trial of
its family whose weights fill the most of its network (:func:`mednas.train.most_similar`) lends them, copied whole
where tensor shapes match and as overlapping slices where widths differ (:func:`mednas.train.transfer_weights`).
A ladder trial starts its first rung from them, a flat trial its proxy training. See ``docs/ladder.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednas.config import TaskConfig
from mednas.rundir import RunDir, TrialRecord

if TYPE_CHECKING:
    import torch

    from mednas.spec import ArchSpec
    from mednas.study._ladder import RungRun
    from mednas.study._trial import TrialObjective, _Draw, _TrialRun
    from mednas.train import Transfer

__all__ = ["PARENT_WEIGHTS", "Inheritance", "choose_parent", "keep_parent_weights"]

#: The file in ``trials/<n>/`` that keeps a finished trial's final weights for its family's later candidates.
PARENT_WEIGHTS = "parent.pt"


@dataclass(frozen=True)
class Inheritance:
    """The weights a new candidate starts from: the parent trial, its state dict and how much of it fits.

    Args:
        parent: The finished trial the weights come from.
        state: Its state dict (on the CPU).
        transfer: What :func:`~mednas.train.transfer_weights` copies from ``state`` into the new candidate's
            network (``transfer.fraction``: the record's ``inherited_fraction``).
        path: The weights file, relative to the run directory.
    """

    parent: int
    state: dict[str, torch.Tensor]
    transfer: Transfer
    path: str

    @property
    def fraction(self) -> float:
        """The share of the new network's state-dict elements that come from the parent, in ``(0, 1]``."""
        return self.transfer.fraction


def choose_parent(
    run_dir: RunDir, task: TaskConfig, spec: ArchSpec, number: int, *, prefer: int | None = None
) -> Inheritance | None:
    """Pick the finished trial of ``spec``'s family whose weights fill the most of its network, and load them.

    Candidates are this run directory's trials that are complete, or pruned after leaving weights (a ladder trial
    stopped at a rung's end, where its last rung's weights were kept), of the same family, that learned and left
    weights: ``parent.pt``, else ``model.pt``, else the last ``rung-<k>.pt``. Between equally similar ones the
    trial that climbed highest and scored best wins, then the earliest. A file that cannot be read (deleted or
    being replaced by another worker) passes the choice to the next candidate.

    Args:
        run_dir: The run directory.
        task: The task (the primary objective's direction ranks equally similar candidates).
        spec: The new candidate's spec, as it will be built (adapted to the shape it trains at first).
        number: The new candidate's trial number (never its own parent).
        prefer: A trial to inherit from whenever it still has weights of the family (a retry takes its
            original's parent, so that a resumed training and its record agree).

    Returns:
        The parent, its weights and the transfer, or None: nothing of the family has finished with weights
        (or nothing of theirs fits), and the candidate starts fresh.

    Example:
        >>> inherited = choose_parent(RunDir(run), task, spec, 7)  # doctest: +SKIP
        >>> (inherited.parent, round(inherited.fraction, 2)) if inherited else None  # doctest: +SKIP
        (3, 0.74)
    """
    from mednas.errors import RunDirError
    from mednas.train import load_weights, most_similar

    pool = _candidates(run_dir, task, number)
    while pool:
        preferred = [(s, p) for n, s, p in pool if n == prefer]
        pick = most_similar(spec, preferred) or most_similar(spec, [(s, p) for _, s, p in pool])
        if pick is None:
            return None
        n = next(c[0] for c in pool if c[2] == pick[1])
        try:
            state = load_weights(pick[1])
        except RunDirError:  # deleted or replaced meanwhile: the next most similar lends instead
            pool = [c for c in pool if c[0] != n]
            continue
        transfer = _planned_transfer(state, spec)
        if transfer.fraction <= 0:  # saved weights that fit nothing after all (an edited spec.json)
            pool = [c for c in pool if c[0] != n]
            continue
        return Inheritance(n, state, transfer, run_dir.rel(pick[1]))
    return None


def keep_parent_weights(
    run_dir: RunDir, task: TaskConfig, number: int, state: dict[str, Any] | None
) -> Path | None:
    """Keep a finished trial's final weights as ``trials/<n>/parent.pt`` when ``search.inherit`` is on.

    ``model.pt`` is kept only for the ``search.keep_weights`` best trials (the others' are deleted as the search
    goes on), so inheritance keeps its own copy of every finished candidate's weights: one state dict per trial
    (4 bytes per parameter and buffer element in float32). Written atomically before the trial's record says it
    finished, so a record that says so has its weights beside it.

    Returns:
        The file written, or None (inheritance off, or no weights: no epoch was scored).
    """
    if not task.search.inherit or state is None:
        return None
    from mednas.train import save_weights

    return save_weights(run_dir.trial_dir(number) / PARENT_WEIGHTS, state)


# -- the hooks of a trial (mednas.study._trial and mednas.study._ladder call these)


def inherit_into_rung(objective: TrialObjective, run: _TrialRun, draw: _Draw, step: RungRun) -> RungRun:
    """A ladder trial's rung 0: with ``search.inherit``, start it from a parent's weights (``start: inherited``)."""
    if objective.task.search.inherit:
        inherited = _start(objective, run, draw, step.rung.shape)
        if inherited is not None:
            step.init_state, step.start = inherited.state, "inherited"
    return step


def flat_start(objective: TrialObjective, run: _TrialRun, draw: _Draw) -> dict[str, Any]:
    """A flat proxy trial's ``train_candidate`` arguments: ``init_state`` from a parent, or nothing."""
    if not objective.task.search.inherit:
        return {}
    inherited = _start(objective, run, draw, objective.fidelity.net_shape)
    return {} if inherited is None else {"init_state": inherited.state}


def _start(
    objective: TrialObjective, run: _TrialRun, draw: _Draw, shape: Sequence[int]
) -> Inheritance | None:
    """Choose the trial's parent for a network built at ``shape``; note ``parent`` and the fraction; log it."""
    rd, number = objective.run_dir, run.trial.number
    # A resumed trial's record already names the parent it started from; a retry's original record may.
    prefer = getattr(run.record, "parent", None)
    if prefer is None and run.record.retry_of is not None:
        original = rd.trial(run.record.retry_of)
        prefer = getattr(original, "parent", None) if original is not None else None
    spec = draw.space.adapt_to_shape(draw.spec, tuple(int(s) for s in shape))
    inherited = choose_parent(rd, objective.task, spec, number, prefer=prefer)
    if inherited is None:
        run.note(parent=None, inherited_fraction=0.0)
        run.log(f"inherit: no finished {draw.family} candidate with weights yet; starting fresh")
        return None
    t = inherited.transfer
    run.note(parent=inherited.parent, inherited_fraction=t.fraction)
    run.log(
        f"inherit: starting from trial {inherited.parent}'s weights ({inherited.path}): {t.fraction:.1%} of the "
        f"network's elements ({t.exact} tensors whole, {t.sliced} sliced, {t.fresh} fresh)"
    )
    return inherited


def _candidates(run_dir: RunDir, task: TaskConfig, number: int) -> list[tuple[int, ArchSpec, Path]]:
    """``(trial, spec, weights)`` of every finished trial that may lend its weights, best first."""
    from mednas.errors import RunDirError
    from mednas.spec import load_spec

    sign = 1.0 if task.objective.directions[0] == "maximize" else -1.0
    ranked: list[tuple[tuple[Any, ...], int, ArchSpec, Path]] = []
    for n in run_dir.trial_numbers():
        rec = run_dir.trial(n) if n != number else None
        if rec is None or rec.state not in ("complete", "pruned") or rec.learned is False:
            continue
        weights = _weights(run_dir.trial_dir(n))
        if weights is None or rec.duplicate_of is not None:
            continue
        path = run_dir.trial_dir(n) / "spec.json"
        try:
            spec = load_spec(run_dir.read_json(path), path, error=RunDirError)
        except (RunDirError, OSError, ValueError):
            continue  # a trial whose spec cannot be read lends nothing
        ranked.append((_rank(rec, sign), n, spec, weights))
    ranked.sort(key=lambda r: r[0])
    return [(n, spec, weights) for _, n, spec, weights in ranked]


def _rank(rec: TrialRecord, sign: float) -> tuple[Any, ...]:
    """Sort key among equally similar parents: complete first, then the highest rung, the best value, the earliest."""
    value = rec.objective_value if rec.complete else _last_rung_value(rec)
    score = sign * value if value is not None and math.isfinite(value) else -math.inf
    reached = getattr(rec, "rung_reached", None)
    return (not rec.complete, -(reached if reached is not None else 0), -score, rec.trial)


def _last_rung_value(rec: TrialRecord) -> float | None:
    rungs = getattr(rec, "rungs", None) or []
    value = rungs[-1].get("value") if rungs else None
    return float(value) if value is not None else None


def _weights(tdir: Path) -> Path | None:
    """A finished trial's final weights: ``parent.pt``, ``model.pt``, or its last rung's checkpoint."""
    for name in (PARENT_WEIGHTS, "model.pt"):
        if (tdir / name).is_file():
            return tdir / name
    rungs = []
    for path in tdir.glob("rung-*.pt"):
        k = path.stem.removeprefix("rung-")
        if k.isdigit():
            rungs.append((int(k), path))
    return max(rungs)[1] if rungs else None


def _planned_transfer(state: dict[str, torch.Tensor], spec: ArchSpec) -> Transfer:
    """What :func:`~mednas.train.transfer_weights` will copy from ``state`` into ``spec``'s network.

    The network is built on PyTorch's ``meta`` device: the transfer is decided from shapes alone, the copies into
    meta tensors are no-ops (and say so in a warning, silenced here), nothing is allocated.
    """
    import torch

    from mednas.spec import build
    from mednas.train import transfer_weights

    with torch.device("meta"):
        net = build(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return transfer_weights(state, net)
