"""The resolution ladder (``search.fidelity: ladder``): a trial climbs from low to full resolution, carrying weights.

A ladder trial trains rung after rung at growing input shapes. At each rung's end it reports the rung's score at
step ``eta**k`` (so Optuna's successive-halving and Hyperband rungs are exactly the ladder's rungs), or, with
several objectives, mednas's Pareto-aware rule (:func:`mednas.study._pruning.ladder_promotes`) takes the decision;
a survivor trains the next rung from its best weights so far. The top rung is full resolution, so the search's
best candidates leave it trained at full fidelity. See ``docs/ladder.md``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednas.config import TaskConfig
from mednas.errors import MednasError
from mednas.rundir import RunDir, TrialRecord
from mednas.study._promotion import CONTINUES, PAUSED

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

#: A ladder trial's progress file in ``trials/<n>/`` beside its ``rung-<k>.pt`` weights (see :class:`LadderFiles`).
PROGRESS = "ladder.json"
#: Record fields noted before rung 0 trains (weight inheritance) that a resumed trial keeps.
CARRIED = ("parent", "inherited_fraction")

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
    0.5 and 1.0), every rung ``proxy.epochs // 2`` epochs (at least 1): a survivor's epochs are split evenly over
    the shapes, as in progressive resizing (EfficientNetV2), and the top rung, which starts from the weights the
    lower rungs trained, costs half a flat proxy's epochs at full resolution.
    """
    cfg = task.search.ladder
    if cfg.rungs is not None:
        pairs = [(r.scale, r.epochs) for r in cfg.rungs]
    else:
        epochs = max(1, task.proxy.epochs // 2)
        scales = [0.25, 0.5] if all(s * 0.25 >= MIN_RUNG_SIZE for s in full_shape) else [0.5]
        pairs = [(s, epochs) for s in [*scales, 1.0]]
    return [Rung(float(scale), rung_shape(full_shape, scale), int(epochs)) for scale, epochs in pairs]


def rung_step(task: TaskConfig, k: int) -> int:
    """The step rung ``k`` reports at: ``eta**k`` (Optuna's pruners place their rungs exactly there)."""
    return int(task.search.ladder.eta) ** k


def ladder_summary(task: TaskConfig, full_shape: Sequence[int] | None) -> dict[str, Any]:
    """``summary.json`` ``ladder``: the rungs (scale, shape, epochs), ``eta``, the brackets and the promotion in
    effect (``deferred`` or ``immediate``: see ``search.ladder.promotion``)."""
    cfg = task.search.ladder
    if full_shape is not None:
        rungs = [r.to_dict() for r in ladder_rungs(task, full_shape)]
    else:
        scales = [(r.scale, r.epochs) for r in cfg.rungs] if cfg.rungs else []
        rungs = [{"scale": s, "shape": None, "epochs": e} for s, e in scales]
    from mednas.study._study import deferred_promotion

    promotion = "deferred" if deferred_promotion(task) else "immediate"
    return {"rungs": rungs, "eta": cfg.eta, "brackets": cfg.brackets, "promotion": promotion}


def compute_summary(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """``summary.json`` ``compute``: voxel-epochs and seconds over every trial, and the share later pruned.

    A trial paused on the ladder and later promoted (its climb continued by another trial) is not pruned: what it
    trained is the start of that climb.
    """
    total = pruned = 0.0
    seconds = 0.0
    promoted = {int(c["trial"]) for rec in records if isinstance(c := getattr(rec, "continues", None), dict)}
    for rec in records:
        compute = getattr(rec, "compute", None) or {}
        c = float(compute.get("voxel_epochs") or 0)
        total += c
        seconds += float(compute.get("seconds") or 0.0)
        if rec.state == "pruned" and rec.trial not in promoted:
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
    #: The rung's per-epoch checkpoint (``trials/<n>/rung-<k>.ckpt``): a killed trial's retry resumes from it.
    checkpoint: Path | None = None


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
    with its model weights those of the top rung (``search.keep_weights``). A retry of a killed ladder trial
    resumes it (:func:`_take_over`): the rungs it passed are not trained again, the rung it was training continues
    from its last epoch. A trial that ends here (complete, pruned, failed, Ctrl-C) deletes its checkpoints; a killed
    or SIGTERMed process (whose trial stays RUNNING, then is retried) leaves them, for its retry.
    """
    rungs = objective.ladder_rungs
    assert rungs is not None, "climb() runs ladder trials only"
    reporter = LadderReporter(objective, run.trial, run.log, rungs)
    run.note(fidelity="ladder", rungs=[], rung_reached=None, compute={"voxel_epochs": 0, "seconds": 0.0})
    files = LadderFiles(objective.run_dir, run.trial.number)
    try:
        resume, draw = _take_over(objective, run, draw, files, reporter)
        values = _climb_rungs(objective, run, draw, costs, reporter, files, resume)
    except (Exception, KeyboardInterrupt) as exc:
        # Ended here: pruned, failed, or Ctrl-C (Optuna records it failed and nothing retries it). SystemExit
        # (SIGTERM, see mednas.study._runner) passes untouched: the trial stays RUNNING and its retry resumes it.
        # A paused trial keeps its rung's weights for the continuation that may promote it.
        if not getattr(exc, PAUSED, False):
            files.clear()
        raise
    files.clear()
    return values


def _climb_rungs(
    objective: TrialObjective,
    run: _TrialRun,
    draw: _Draw,
    costs: dict[str, float],
    reporter: LadderReporter,
    files: LadderFiles,
    resume: Resume,
) -> list[float]:
    """Climb from the first rung ``resume`` has not passed to the top (see :func:`climb`)."""
    import optuna

    rungs = objective.ladder_rungs
    assert rungs is not None
    passed = list(resume.passed)
    state, trained = resume.state, None
    for k in range(len(passed), len(rungs)):
        step = _prepare_rung(objective, run, draw, k, state)
        step.checkpoint = files.checkpoint(k)
        reporter.start_rung(k, len(step.train))
        before = resume.enter(run, reporter, k)
        files.write(run, draw, passed)
        t_rung = time.perf_counter()
        trained = objective._train(run, draw, reporter, rung=step)
        seconds = time.perf_counter() - t_rung + before
        values = _rung_values(objective, trained, costs)
        entry = _note_rung(run, step, trained, values[0], seconds, reporter.n_train)
        reporter.rung_done()
        state = trained.result.best_state
        _report_rung(objective, run, k, values)
        if k == len(rungs) - 1:
            break
        reason, pause = _rung_decision(objective, run, k, values)
        history = [e for e in reporter.entries if e["rung"] == k]
        if reason:
            _keep_parent_weights(objective, run, state)
            exc = optuna.TrialPruned(reason)
            if pause and state is not None:
                files.passed(
                    run, draw, [*passed, {"entry": entry, "values": values, "history": history}], state
                )
                run.note(paused_at=k)
                run.trial.set_user_attr(PAUSED, k)
                setattr(exc, PAUSED, True)
            objective._pruned(run, exc, reporter)
            raise exc
        passed.append({"entry": entry, "values": values, "history": history})
        files.passed(run, draw, passed, state)
        run.log(f"rung {k} passed: {values[0]:.4f}; on to rung {k + 1}")
    top = objective._score(run, trained, costs)
    _finish(run, reporter)
    objective._record(run, trained, reporter.marks)
    return top


def _report_rung(objective: TrialObjective, run: _TrialRun, k: int, values: list[float]) -> None:
    """Put rung ``k``'s values in the storage: ``rung_values`` (every worker's rung rule reads it), Optuna's report."""
    rung_values = dict(run.trial.user_attrs.get("rung_values", {}))
    rung_values[str(k)] = values
    run.trial.set_user_attr("rung_values", rung_values)
    if not objective.task.objective.multi_objective:
        run.trial.report(values[0], rung_step(objective.task, k))


def _keep_parent_weights(objective: TrialObjective, run: _TrialRun, state: Any) -> None:
    """A trial pruned at a rung's end keeps that rung's weights for weight inheritance (``search.inherit``).

    Its ``rung-<k>.pt`` files are deleted as it ends; ``parent.pt`` is what later candidates of its family read.
    """
    if getattr(objective.task.search, "inherit", False) and state is not None:
        from mednas.study._inherit import keep_parent_weights

        keep_parent_weights(objective.run_dir, objective.task, run.trial.number, state)


def _prepare_rung(objective: TrialObjective, run: _TrialRun, draw: _Draw, k: int, state: Any) -> RungRun:
    """Rung ``k``'s data and fidelity, and the weights it starts from: carried, restarted, or fresh (rung 0)."""
    from mednas.study._inherit import inherit_into_rung
    from mednas.train._candidate import Fidelity

    assert objective.ladder_rungs is not None
    rung = objective.ladder_rungs[k]
    train, val = objective.rung_data(k)
    fidelity = Fidelity.proxy(objective.task, rung.shape, epochs=rung.epochs, subset=1.0)
    step = RungRun(k, rung, train, val, fidelity)
    if k == 0:  # fresh, or a parent candidate's weights with search.inherit
        return inherit_into_rung(objective, run, draw, step)
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
) -> dict[str, Any]:
    """Add rung ``step`` to the trial's record (see :func:`_add_rung`); return its ``rungs`` entry."""
    result = trained.result
    epochs = len(result.history)
    entry = {
        "rung": step.index,
        "shape": list(step.rung.shape),
        "epochs": epochs,
        "value": value,
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 4),
        "voxel_epochs": epochs * n_train * math.prod(step.rung.shape),
        "start": step.start,
        "learned": result.learned,
    }
    _add_rung(run, entry)
    return entry


def _add_rung(run: _TrialRun, entry: dict[str, Any], *, count: bool = True) -> None:
    """Append ``entry`` to the record's ``rungs``; set ``shape``, ``rung_reached``; add its ``compute`` (unless
    ``count`` is false: a promoted trial's rungs, already in that trial's record)."""
    data = run.record.to_json()
    compute = data.get("compute") or {}
    add = 1 if count else 0
    run.note(
        rungs=list(data.get("rungs") or []) + [entry],
        shape=list(entry["shape"]),
        rung_reached=int(entry["rung"]),
        compute={
            "voxel_epochs": int(compute.get("voxel_epochs", 0)) + add * int(entry["voxel_epochs"]),
            "seconds": round(float(compute.get("seconds", 0.0)) + add * float(entry["seconds"]), 4),
        },
    )


def _rung_decision(
    objective: TrialObjective, run: _TrialRun, k: int, values: list[float]
) -> tuple[str | None, bool]:
    """Why the trial stops at the end of rung ``k`` (None: it climbs on), and whether it pauses (its weights kept
    for a later promotion, :mod:`mednas.study._promotion`) rather than ends."""
    from mednas.study._study import deferred_promotion

    task = objective.task
    eta = task.search.ladder.eta
    if task.objective.multi_objective:
        from mednas.study._pruning import ladder_promotes

        if ladder_promotes(run.trial, k, values, task.objective.directions, eta):
            return None, False
        return (
            f"pruned at the end of rung {k} (not within the best 1/{eta} of the trials that "
            f"reached it, by Pareto rank then primary objective {values[0]:.4f})"
        ), False
    if deferred_promotion(task):  # decided once the rung is complete (mednas.study._promotion)
        return (
            f"paused at the end of rung {k} (objective {values[0]:.4f}); the best 1/{eta} of the rung's candidates "
            "climb on once every candidate has completed it"
        ), True
    if run.trial.should_prune():
        return (
            f"pruned at the end of rung {k} (objective {values[0]:.4f}, {task.search.ladder.brackets})",
            False,
        )
    return None, False


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


# -- resuming a killed trial


class LadderFiles:
    """A ladder trial's checkpoints in ``trials/<n>/``: deleted when the trial ends, taken over by a killed one's retry.

    ``rung-<k>.pt``: rung ``k``'s best weights (a plain state dict: ``torch.load(..., weights_only=True)``), written
    once the trial passed the rung; ``rung-<k>.ckpt``: the training loop's per-epoch checkpoint of the rung being
    trained (:func:`mednas.train.fit`); ``ladder.json``: the trial's seed and candidate, the record fields noted
    before rung 0 trained (``parent``, ``inherited_fraction``) and each passed rung's entry, values and history.
    """

    def __init__(self, run_dir: RunDir, number: int) -> None:
        self.rd, self.dir = run_dir, run_dir.trial_dir(number)

    def weights(self, k: int) -> Path:
        return self.dir / f"rung-{k}.pt"

    def checkpoint(self, k: int) -> Path:
        return self.dir / f"rung-{k}.ckpt"

    @property
    def progress(self) -> Path:
        return self.dir / PROGRESS

    def files(self) -> list[Path]:
        """The ladder's files in the folder now."""
        if not self.dir.is_dir():
            return []
        found = [
            p
            for p in self.dir.glob("rung-*")
            if p.suffix in (".pt", ".ckpt") and p.stem[len("rung-") :].isdigit()
        ]
        return found + ([self.progress] if self.progress.is_file() else [])

    def take(self, other: LadderFiles) -> None:
        """Move ``other``'s files here (renames: the killed trial's folder keeps none, a later retry looks here)."""
        for path in other.files():
            os.replace(path, self.dir / path.name)

    def clear(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)

    def write(self, run: _TrialRun, draw: _Draw, passed: list[dict[str, Any]]) -> None:
        """Write ``ladder.json``: the candidate and its seed, the record fields to carry, the ``passed`` rungs."""
        data = run.record.to_json()
        progress = {
            "trial": run.trial.number,
            "seed": draw.seed,
            "spec_hash": draw.spec.hash,
            "loss": draw.loss,
            "sampling": draw.sampling,
            "record": {k: data[k] for k in CARRIED if k in data},
            "rungs": passed,
        }
        self.rd.write_json(self.progress, progress)

    def passed(self, run: _TrialRun, draw: _Draw, passed: list[dict[str, Any]], state: Any) -> None:
        """The trial passed rung ``len(passed) - 1``: keep its weights, then say so; its epoch checkpoint goes."""
        from mednas.train import save_weights

        k = len(passed) - 1
        if state is not None:  # no epoch scored: nothing to carry (the next rung restarts, as it would have)
            save_weights(self.weights(k), state)
        self.write(run, draw, passed)
        self.checkpoint(k).unlink(missing_ok=True)


@dataclass
class Resume:
    """Where a retried ladder trial picks up: the trial whose files it took, the rungs that trial passed (their
    ``ladder.json`` items), the last one's weights, and the epochs it had trained on the next rung."""

    trial: int | None = None
    passed: list[dict[str, Any]] = field(default_factory=list)
    state: Any = None
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    #: The files are a paused trial's, promoted: its rungs' compute is in its own record, not counted again.
    continued: bool = False

    def enter(self, run: _TrialRun, reporter: LadderReporter, k: int) -> float:
        """Starting rung ``k``: if it is the rung resumed, note the carried record fields and the epochs already
        trained there (into the history); return the seconds those epochs took (0 otherwise)."""
        if self.trial is None or k != len(self.passed):
            return 0.0
        if self.record:
            run.note(**self.record)
        for h in self.history:
            value = float(h.get("value", 0.0))
            reporter.entries.append(
                {
                    "epoch": reporter.before + int(h["epoch"]),
                    "rung": k,
                    "train_loss": h.get("train_loss"),
                    "value": value if math.isfinite(value) else 0.0,
                }
            )
        reporter.done_in_rung = self.epoch
        return float(sum(float(h.get("seconds") or 0.0) for h in self.history))


def _take_over(
    objective: TrialObjective, run: _TrialRun, draw: _Draw, files: LadderFiles, reporter: LadderReporter
) -> tuple[Resume, _Draw]:
    """A retry of a killed ladder trial: take over its files and replay the rungs it passed; else start at rung 0.

    The latest trial of the retry chain that left ``ladder.json`` (for the same candidate) is the one resumed; its
    seed replaces the retry's, so the resumed training is the one that was killed.
    """
    import dataclasses

    from mednas.study._recovery import retried_trials

    if "rung_values" in run.trial.user_attrs:  # Optuna's heartbeat retry copies the killed trial's attributes
        run.trial.set_user_attr("rung_values", {})
    sources = retried_trials(run.trial) if run.record.retry_of is not None else []
    continues = run.trial.user_attrs.get(CONTINUES)
    if continues is not None:  # a promotion (mednas.study._promotion): the paused trial's files, last
        sources.append(int(continues))
    if not sources:
        return Resume(), draw
    for n in sources:
        source = LadderFiles(objective.run_dir, n)
        progress = _read_progress(source)
        if progress is None:
            continue
        if (progress.get("spec_hash"), progress.get("loss"), progress.get("sampling")) != (
            draw.spec.hash,
            draw.loss,
            draw.sampling,
        ):
            run.log(f"trial {n}'s ladder checkpoints are another candidate's: not resumed")
            continue
        files.take(source)
        try:
            resume = _resume(files, n, progress, len(objective.ladder_rungs or []))
            draw = dataclasses.replace(draw, seed=int(progress["seed"]))
            if n == continues:
                resume.continued = True
        except Exception as exc:  # noqa: BLE001 - whatever cannot be read is trained again, not trusted
            run.log(
                f"trial {n}'s ladder checkpoints cannot be read ({type(exc).__name__}); climbing from rung 0"
            )
            files.clear()
            return Resume(), draw
        _replay(objective, run, draw, reporter, resume)
        return resume, draw
    if continues is not None:
        run.log(f"continuation of trial {continues}: its rung weights are not here; climbing from rung 0")
    else:
        run.log(
            f"retry of trial {run.record.retry_of}: no ladder checkpoint of it here; climbing from rung 0"
        )
    return Resume(), draw


def _read_progress(files: LadderFiles) -> dict[str, Any] | None:
    if not files.progress.is_file():
        return None
    try:
        progress = files.rd.read_json(files.progress)
    except (MednasError, OSError):
        return None
    return progress if isinstance(progress, dict) else None


def _resume(files: LadderFiles, n: int, progress: dict[str, Any], n_rungs: int) -> Resume:
    """What trial ``n`` left (its files now in ``files``): the rungs it passed, their weights, the epochs after."""
    from mednas.train import load_weights

    passed = list(progress.get("rungs") or [])
    m = len(passed)
    if m >= n_rungs or [int(item["entry"]["rung"]) for item in passed] != list(range(m)):
        raise ValueError(
            f"the passed rungs {[item['entry']['rung'] for item in passed]} do not fit the ladder"
        )
    if not all(_well_formed(item) for item in passed):  # checked before anything of it is used
        raise ValueError("a passed rung's entry, values or history is malformed")
    state = load_weights(files.weights(m - 1)) if m and files.weights(m - 1).is_file() else None
    for k in range(m):  # a rung passed just before the kill may have left its epoch checkpoint
        files.checkpoint(k).unlink(missing_ok=True)
    epoch, history = 0, []
    if files.checkpoint(m).is_file():
        import torch

        # The training loop's checkpoint (mednas.train.fit): plain tensors and numbers, read without code.
        ckpt = torch.load(files.checkpoint(m), map_location="cpu", weights_only=True)
        epoch, history = int(ckpt["epoch"]), [dict(h) for h in ckpt.get("history") or []]
    return Resume(n, passed, state, epoch, history, dict(progress.get("record") or {}))


def _well_formed(item: Any) -> bool:
    """Whether a passed rung of ``ladder.json`` holds what :func:`_replay` reads."""
    try:
        entry = item["entry"]
        numbers = [float(entry["voxel_epochs"]), float(entry["seconds"]), float(item["values"][0])]
        return all(math.isfinite(v) for v in numbers) and all("epoch" in e for e in item["history"])
    except (KeyError, TypeError, ValueError, IndexError):
        return False


def _replay(
    objective: TrialObjective, run: _TrialRun, draw: _Draw, reporter: LadderReporter, resume: Resume
) -> None:
    """Put the rungs ``resume`` passed into the record, the history and the storage, as if trained here.

    Their values are reported again at their steps and each rung is shown to Optuna's pruner (whose successive
    halving keeps a rung's value for the trials that come after only when it judges it); the decision the killed
    trial took (it climbed) stands.
    """
    values: dict[str, list[float]] = {}
    for item in resume.passed:
        if resume.continued:  # marked in this trial's own ladder.json too, so a retry of it never counts them
            item["entry"] = dict(item["entry"], continued_from=resume.trial)
        entry = dict(item["entry"], resumed_from=resume.trial)
        _add_rung(run, entry, count="continued_from" not in entry)
        reporter.entries.extend(dict(e) for e in item["history"])
        values[str(item["entry"]["rung"])] = [float(v) for v in item["values"]]
    if values:
        run.trial.set_user_attr("rung_values", values)
    if not objective.task.objective.multi_objective:
        for k in range(len(resume.passed)):
            run.trial.report(values[str(k)][0], rung_step(objective.task, k))
            run.trial.should_prune()
    where = {"trial": resume.trial, "rung": len(resume.passed), "epoch": resume.epoch}
    if resume.continued:
        run.note(seed=draw.seed, continues={"trial": resume.trial, "rung": len(resume.passed)})
    else:
        run.note(seed=draw.seed, resumed_from=where)
    run.trial.set_user_attr("seed", draw.seed)
    verb = "promoted: continuing" if resume.continued else "resuming"
    run.log(
        f"{verb} trial {resume.trial}: rungs passed {list(range(len(resume.passed)))} taken over, "
        f"rung {len(resume.passed)} from epoch {resume.epoch + 1} (seed {draw.seed})"
    )
