"""The resolution ladder (``search.fidelity: ladder``): a trial climbs from low to full resolution, carrying weights.

A ladder trial trains rung after rung at growing input shapes. At each rung's end it reports the rung's score at
step ``eta**k`` (so Optuna's successive-halving and Hyperband rungs are exactly the ladder's rungs), or, with
several objectives, mednas's Pareto-aware rule (:func:`mednas.study._pruning.ladder_promotes`) takes the decision;
a survivor trains the next rung from its best weights so far. The top rung is full resolution, so the search's
best candidates leave it trained at full fidelity. See ``docs/ladder.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mednas.config import TaskConfig
from mednas.rundir import TrialRecord

if TYPE_CHECKING:
    from mednas.data import ArrayData
    from mednas.study._trial import TrialObjective, _Draw, _TrialRun
    from mednas.train._candidate import Fidelity

__all__ = [
    "Rung",
    "compute_summary",
    "ladder_rungs",
    "ladder_summary",
    "rung_shape",
    "rung_step",
]

#: The smallest rung shape on any axis, and the multiple every lower rung's axes are rounded to.
MIN_RUNG_SIZE = 16
RUNG_MULTIPLE = 8


@dataclass(frozen=True)
class Rung:
    """One rung of a task's ladder: its scale, its spatial shape and the epochs trained there."""

    scale: float
    shape: tuple[int, ...]
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """The rung as ``summary.json`` ``ladder.rungs`` lists it."""
        return {"scale": self.scale, "shape": list(self.shape), "epochs": self.epochs}


def rung_shape(full_shape: Sequence[int], scale: float) -> tuple[int, ...]:
    """The spatial shape of a rung at ``scale`` of ``full_shape``.

    Each axis is ``round(full * scale)`` rounded to a multiple of 8 and at least 16, clamped to the full shape;
    scale 1.0 is the full shape itself.

    Example:
        >>> rung_shape((32, 40), 0.5)
        (16, 24)
    """
    full = tuple(int(s) for s in full_shape)
    if scale >= 1.0:
        return full
    out = []
    for s in full:
        # Halves round up (not to even), so 20 pixels make 24, not 16.
        size = RUNG_MULTIPLE * math.floor(math.floor(s * scale + 0.5) / RUNG_MULTIPLE + 0.5)
        out.append(min(s, max(MIN_RUNG_SIZE, size)))
    return tuple(out)


def ladder_rungs(task: TaskConfig, full_shape: Sequence[int]) -> list[Rung]:
    """The task's rungs at ``full_shape``: ``search.ladder.rungs``, or the default ladder.

    The default is scales 0.25, 0.5 and 1.0 where a quarter of the full shape keeps every axis at 16 or more (else
    0.5 and 1.0), the lower rungs ``proxy.epochs // 2`` epochs (at least 1), the top rung ``proxy.epochs``.
    """
    cfg = task.search.ladder
    if cfg.rungs is not None:
        pairs = [(r.scale, r.epochs) for r in cfg.rungs]
    else:
        low = max(1, task.proxy.epochs // 2)
        scales = [0.25, 0.5] if all(s * 0.25 >= MIN_RUNG_SIZE for s in full_shape) else [0.5]
        pairs = [(s, low) for s in scales] + [(1.0, task.proxy.epochs)]
    return [Rung(float(scale), rung_shape(full_shape, scale), int(epochs)) for scale, epochs in pairs]


def rung_step(task: TaskConfig, k: int) -> int:
    """The step rung ``k`` reports at: ``eta**k`` (Optuna's pruners place their rungs exactly there)."""
    return int(task.search.ladder.eta) ** k


def ladder_summary(task: TaskConfig, full_shape: Sequence[int] | None) -> dict[str, Any]:
    """``summary.json`` ``ladder``: the rungs (scale, shape, epochs), ``eta`` and the brackets."""
    cfg = task.search.ladder
    if full_shape is not None:
        rungs = [r.to_dict() for r in ladder_rungs(task, full_shape)]
    else:
        scales = [(r.scale, r.epochs) for r in cfg.rungs] if cfg.rungs else []
        rungs = [{"scale": s, "shape": None, "epochs": e} for s, e in scales]
    return {"rungs": rungs, "eta": cfg.eta, "brackets": cfg.brackets}


def compute_summary(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """``summary.json`` ``compute``: voxel-epochs and seconds over every trial, and the share later pruned."""
    total = pruned = 0.0
    seconds = 0.0
    for rec in records:
        compute = getattr(rec, "compute", None) or {}
        c = float(compute.get("voxel_epochs") or 0)
        total += c
        seconds += float(compute.get("seconds") or 0.0)
        if rec.state == "pruned":
            pruned += c
    return {
        "voxel_epochs": int(total),
        "pruned_voxel_epochs": int(pruned),
        "pruned_share": pruned / total if total > 0 else None,
        "seconds": round(seconds, 3),
    }


@dataclass
class RungRun:
    """What one rung of a trial trains on: its index, rung, data, fidelity and the weights it starts from."""

    index: int
    rung: Rung
    train: ArrayData
    val: ArrayData
    fidelity: Fidelity
    init_state: Any = None
    start: str = "fresh"


class LadderReporter:
    """The training loop's per-epoch callback of a ladder trial: log and show each epoch, check learning.

    Nothing is reported to Optuna per epoch: a ladder trial is judged at its rungs' ends only. The not-learning
    check runs on the first rung (the one trained from scratch), at ``dead_check_epoch`` when that falls within it.
    ``marks`` times every epoch across the rungs (the record's ``timing``); ``entries`` is the ladder's history.
    """

    def __init__(self, objective: TrialObjective, trial: Any, log: Any, rungs: Sequence[Rung]) -> None:
        self.trial, self.log, self.rungs = trial, log, list(rungs)
        self.total = sum(r.epochs for r in rungs)
        check = objective.task.dead_check_epoch
        self.check_epoch = check if check and check <= rungs[0].epochs else 0
        self.progress = objective.on_epoch
        self.marks: list[float] = []
        self.entries: list[dict[str, Any]] = []
        self.dead_reason: str | None = None
        self.rung = 0
        self.before = 0  # epochs of the rungs before this one
        self.done_in_rung = 0
        self.n_train = 0
        self.t_rung: float | None = None

    def start_rung(self, k: int, n_train: int) -> None:
        """Begin rung ``k`` (trained on ``n_train`` cases)."""
        self.before = sum(r.epochs for r in self.rungs[:k])
        self.rung, self.done_in_rung, self.n_train = k, 0, n_train
        self.t_rung = time.perf_counter()

    def rung_done(self) -> None:
        """The current rung ended and its compute is in the record: nothing of it is partial any more."""
        self.done_in_rung, self.t_rung = 0, None

    def __call__(self, result: Any) -> None:
        if not self.marks:
            self.marks.append(time.perf_counter() - result.seconds)
        try:
            self._epoch(result)
        finally:
            self.marks.append(time.perf_counter())

    def _epoch(self, result: Any) -> None:
        import optuna

        rung = self.rungs[self.rung]
        self.done_in_rung = result.epoch
        epoch = self.before + result.epoch
        shape = "x".join(str(s) for s in rung.shape)
        self.log(
            f"rung {self.rung} ({shape}) epoch {result.epoch}/{rung.epochs}: loss {result.train_loss:.4f}, "
            f"objective {result.value:.4f} ({result.seconds:.1f}s)"
        )
        value = result.value if math.isfinite(result.value) else 0.0
        self.entries.append(
            {"epoch": epoch, "rung": self.rung, "train_loss": result.train_loss, "value": value}
        )
        if self.progress:
            self.progress(self.trial.number, epoch, self.total)
        if self.rung == 0 and self.check_epoch and result.epoch == self.check_epoch and result.not_learning:
            self.dead_reason = result.not_learning
            raise optuna.TrialPruned(f"not learning: {result.not_learning} (checked at epoch {result.epoch})")

    def partial_voxel_epochs(self) -> int:
        """Voxel-epochs spent on the current rung so far (a rung stopped before its end)."""
        return self.done_in_rung * self.n_train * math.prod(self.rungs[self.rung].shape)

    def pruned_fields(self, run: _TrialRun) -> dict[str, Any]:
        """What a trial stopped inside a rung adds to its record: its history, and the rung's compute so far."""
        compute = dict(run.record.to_json().get("compute") or {"voxel_epochs": 0, "seconds": 0.0})
        compute["voxel_epochs"] = int(compute.get("voxel_epochs", 0)) + self.partial_voxel_epochs()
        partial = time.perf_counter() - self.t_rung if self.t_rung is not None else 0.0
        compute["seconds"] = round(float(compute.get("seconds", 0.0)) + partial, 4)
        return {"history": list(self.entries), "compute": compute}


def climb(objective: TrialObjective, run: _TrialRun, draw: _Draw, costs: dict[str, float]) -> list[float]:
    """Train ``draw`` up the ladder, judging it at each rung's end; return the top rung's objective values.

    A trial pruned at a rung's end is recorded as ``pruned`` with the rungs it completed (then
    ``optuna.TrialPruned`` is raised); one that reaches the top rung is scored and recorded like a flat trial,
    with its model weights those of the top rung (``search.keep_weights``).
    """
    import optuna

    rungs = objective.ladder_rungs
    assert rungs is not None, "climb() runs ladder trials only"
    reporter = LadderReporter(objective, run.trial, run.log, rungs)
    run.note(fidelity="ladder", rungs=[], rung_reached=None, compute={"voxel_epochs": 0, "seconds": 0.0})
    state: Any = None
    trained: Any = None
    for k in range(len(rungs)):
        step = _prepare_rung(objective, run, draw, k, state)
        reporter.start_rung(k, len(step.train))
        t_rung = time.perf_counter()
        trained = objective._train(run, draw, reporter, rung=step)
        seconds = time.perf_counter() - t_rung
        values = _rung_values(objective, trained, costs)
        _note_rung(run, step, trained, values[0], seconds, reporter.n_train)
        reporter.rung_done()
        state = trained.result.best_state
        rung_values = dict(run.trial.user_attrs.get("rung_values", {}))
        rung_values[str(k)] = values
        run.trial.set_user_attr("rung_values", rung_values)
        if not objective.task.objective.multi_objective:
            run.trial.report(values[0], rung_step(objective.task, k))
        if k == len(rungs) - 1:
            break
        reason = _rung_decision(objective, run, k, values)
        if reason:
            exc = optuna.TrialPruned(reason)
            objective._pruned(run, exc, reporter)
            raise exc
        run.log(f"rung {k} passed: {values[0]:.4f}; on to rung {k + 1}")
    top = objective._score(run, trained, costs)
    _finish(run, reporter)
    objective._record(run, trained, reporter.marks)
    return top


def _prepare_rung(objective: TrialObjective, run: _TrialRun, draw: _Draw, k: int, state: Any) -> RungRun:
    """Rung ``k``'s data and fidelity, and the weights it starts from: carried, restarted, or fresh (rung 0)."""
    from mednas.train._candidate import Fidelity

    assert objective.ladder_rungs is not None
    rung = objective.ladder_rungs[k]
    train, val = objective.rung_data(k)
    fidelity = Fidelity.proxy(objective.task, rung.shape, epochs=rung.epochs, subset=1.0)
    step = RungRun(k, rung, train, val, fidelity)
    if k == 0:
        return step
    if state is None:  # the previous rung kept no weights (no epoch scored): nothing to carry
        step.start = "restarted"
        return step
    import torch

    from mednas.spec import build
    from mednas.train import _inherit

    adapted = draw.space.adapt_to_shape(draw.spec, rung.shape)
    with torch.device("meta"):
        net = build(adapted)
    if _inherit.same_structure(state, net):
        step.init_state, step.start = state, "carried"
    else:
        # A network whose parameter shapes change with the input size cannot honestly carry its weights.
        step.start = "restarted"
        run.log(f"rung {k}: the network's parameters change with the input size; restarted fresh")
    return step


def _rung_values(objective: TrialObjective, trained: Any, costs: dict[str, float]) -> list[float]:
    """The objective values at a rung's best epoch: the primary, then each secondary (from costs or metrics)."""
    result = trained.result
    value = float(result.best_value) if math.isfinite(result.best_value) else 0.0
    metrics = {k: {"value": v} for k, v in (result.best_metrics or {}).items()}
    return [value] + [
        objective._secondary_value(m.metric, metrics, costs) for m in objective.task.objective.secondary
    ]


def _note_rung(
    run: _TrialRun, step: RungRun, trained: Any, value: float, seconds: float, n_train: int
) -> None:
    """Add rung ``step`` to the trial's record: its entry in ``rungs``, ``shape``, ``rung_reached``, ``compute``."""
    result = trained.result
    epochs = len(result.history)
    voxel_epochs = epochs * n_train * math.prod(step.rung.shape)
    data = run.record.to_json()
    rungs = list(data.get("rungs") or [])
    rungs.append(
        {
            "rung": step.index,
            "shape": list(step.rung.shape),
            "epochs": epochs,
            "value": value,
            "best_epoch": result.best_epoch,
            "seconds": round(seconds, 4),
            "voxel_epochs": voxel_epochs,
            "start": step.start,
            "learned": result.learned,
        }
    )
    compute = data.get("compute") or {}
    run.note(
        rungs=rungs,
        shape=list(step.rung.shape),
        rung_reached=step.index,
        compute={
            "voxel_epochs": int(compute.get("voxel_epochs", 0)) + voxel_epochs,
            "seconds": round(float(compute.get("seconds", 0.0)) + seconds, 4),
        },
    )


def _rung_decision(objective: TrialObjective, run: _TrialRun, k: int, values: list[float]) -> str | None:
    """Why the trial stops at the end of rung ``k`` (None: it climbs on)."""
    task = objective.task
    if task.objective.multi_objective:
        from mednas.study._pruning import ladder_promotes

        if ladder_promotes(run.trial, k, values, task.objective.directions, task.search.ladder.eta):
            return None
        return (
            f"pruned at the end of rung {k} (not within the best 1/{task.search.ladder.eta} of the trials that "
            f"reached it, by Pareto rank then primary objective {values[0]:.4f})"
        )
    if run.trial.should_prune():
        return f"pruned at the end of rung {k} (objective {values[0]:.4f}, {task.search.ladder.brackets})"
    return None


def _finish(run: _TrialRun, reporter: LadderReporter) -> None:
    """The ladder's own view of a completed trial: its whole history, epochs, and learning across the rungs.

    A carried rung starts from trained weights, so its own not-learning judgement (loss barely falling since its
    first epoch) says nothing; the trial learned when any rung did.
    """
    rungs = run.record.to_json().get("rungs") or []
    learned = any(r.get("learned") for r in rungs)
    fields: dict[str, Any] = {"history": list(reporter.entries), "epochs": len(reporter.entries)}
    if learned and not run.record.learned:
        fields.update(learned=True, not_learning=None)
        run.trial.set_user_attr("learned", True)
    run.note(**fields)
