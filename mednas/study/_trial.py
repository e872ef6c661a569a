"""One proxy trial of the search: sample a spec, price it (reject it statically if over budget), train, score, record.

With ``search.fidelity: ladder`` the training step climbs the resolution ladder instead, rung after rung, judged at
each rung's end (:mod:`mednas.study._ladder`); pricing, scoring and the record are the same.

This module adapts the training loop's per-epoch callback to Optuna's ``trial.report``/``should_prune`` and
records every trial in ``trials/<n>/``: ``spec.json``, ``log.txt`` and its :class:`~mednas.rundir.TrialRecord`
(``metrics.json``, written through :meth:`~mednas.rundir.RunDir.write_trial` by whichever step ends the trial).
A trial that raises or diverges is recorded as failed with its reason and the search goes on. Optuna's user
attributes get only what the sampler, the pruners, crash recovery and twin detection read (see
:mod:`mednas.study._runner`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mednas.config import TaskConfig
from mednas.data import ArrayData, DataPlan
from mednas.io._atomic import write_json, write_text
from mednas.rundir import RunDir, TrialRecord
from mednas.study._ladder import RungRun, climb, ladder_rungs
from mednas.study._pruning import MultiObjectivePruner
from mednas.study._recovery import Heartbeat, host_tag, retry_of
from mednas.train._candidate import Fidelity, space_context, space_for, suggest_imbalance

if TYPE_CHECKING:
    from mednas.spaces import SpaceContext

__all__ = ["TrialFailed", "TrialObjective", "check_latency_runtime", "proxy_context"]

#: What a trial reusing a twin's score copies from the twin's record (it trained nothing itself).
_REUSED = (
    "params",
    "macs",
    "macs_proxy",
    "activation_mb",
    "latency_ms",
    "latency",
    "objective",
    "values",
    "metrics",
    "operating_point",
    "best_epoch",
    "learned",
    "not_learning",
    "constraints",
    "feasible",
    # a ladder trial's (its compute is not copied: a reusing trial trains nothing)
    "fidelity",
    "rungs",
    "shape",
    "rung_reached",
)
#: The user attributes a reusing trial copies from its twin (the ranking and the sampler read them).
_REUSED_ATTRS = ("learned", "constraints", "feasible")


def check_latency_runtime(task: TaskConfig, device: str) -> None:
    """Refuse, before anything is written, a search whose candidates cannot be timed as ``objective.latency`` asks.

    Args:
        task: The task (nothing is checked unless a constraint or objective names ``latency_ms``).
        device: The search's torch device (where ``torch``/``torchscript`` figures are taken unless the task says).

    Raises:
        MednasError: ONNX Runtime missing (with the install command), or a CUDA figure asked of a machine without one.
    """
    if not task.objective.measures_latency:
        return
    cfg = task.objective.latency
    if cfg.runtime == "onnxruntime":
        from mednas.runtime import check_onnx_available

        check_onnx_available("objective.latency.runtime: onnxruntime", "objective.latency.runtime: torch")
    where = cfg.measured_on(device)
    if where.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            from mednas.errors import ConfigError

            named = f" (target {task.target})" if task.target else ""
            raise ConfigError(
                f"objective.latency.device: {where}{named}, but this machine has no CUDA GPU; time the candidates "
                "on the CPU (objective.latency.device: cpu, or a CPU target such as cpu-1thread)"
            )


def proxy_context(task: TaskConfig, plan: DataPlan) -> SpaceContext:
    """The :class:`~mednas.spaces.SpaceContext` of the proxy search."""
    return space_context(task, plan.proxy_shape, plan.full_shape)


@dataclass(frozen=True)
class _Draw:
    """What a trial sampled: a family's spec, the loss and batch sampling it trains with, and its seed."""

    family: str
    space: Any
    spec: Any
    loss: str
    sampling: str
    seed: int


@dataclass
class _Costs:
    """What a candidate costs, estimated before training: at the proxy, at full resolution, and per image."""

    proxy: Any
    full: Any
    one: Any
    full_spec: Any


class _TrialLog:
    """A trial's ``log.txt``: rewritten atomically on every line, synced to disk once, when the trial ends.

    A sync per line cost more than a short epoch on a busy disk; readers (``tail``, tests that watch a trial's
    progress) still see every line at once and never half a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {msg}")
        write_text(self.path, "\n".join(self.lines) + "\n", sync=False)

    def flush(self) -> None:
        """Write and sync every line so far (nothing when there is none)."""
        if self.lines:
            write_text(self.path, "\n".join(self.lines) + "\n")


@dataclass
class _TrialRun:
    """One trial while it runs: its Optuna trial, its log, its record so far and its clocks.

    ``t_call`` is when Optuna called the objective (the record's ``timing`` counts from it); ``t0`` is when the
    candidate's pricing started (the record's ``seconds`` count from it).
    """

    trial: Any
    log: _TrialLog
    record: TrialRecord
    t_call: float
    t0: float = 0.0

    def note(self, **fields: Any) -> None:
        """Set ``fields`` in the record (the step that ends the trial writes it)."""
        self.record = self.record.updated(**fields)


class TrialFailed(Exception):
    """A candidate failed; Optuna records the trial as FAIL and the search continues."""


class TrialObjective:
    """The Optuna objective: one proxy trial, as sample -> price -> train -> score -> record."""

    def __init__(
        self,
        task: TaskConfig,
        plan: DataPlan,
        run_dir: RunDir,
        train: ArrayData,
        val: ArrayData,
        device: str,
        on_epoch: Callable[[int, int, int], None] | None = None,
        *,
        rung_data: Sequence[tuple[ArrayData, ArrayData]] | None = None,
    ) -> None:
        """Set up the trial objective.

        Args:
            task: The task.
            plan: Its data plan.
            run_dir: The run directory.
            train: Training arrays at the proxy shape (a ladder uses the top rung's, from ``rung_data``).
            val: Validation arrays at the same shape.
            device: Torch device.
            on_epoch: Called with ``(trial, epoch, epochs)`` after every epoch (the progress bar).
            rung_data: Ladder: ``(train, val)`` of every rung, lowest first (default: loaded through the plan's
                cache when first needed).
        """
        self.task, self.plan, self.run_dir = task, plan, run_dir
        self.train, self.val, self.device = train, val, device
        self.ladder_rungs = ladder_rungs(task, plan.full_shape) if task.search.fidelity == "ladder" else None
        self._rung_data = list(rung_data) if rung_data is not None else None
        if self._rung_data:
            self.train, self.val = self._rung_data[-1]
        self.ctx = (
            proxy_context(task, plan)
            if self.ladder_rungs is None
            else space_context(task, self.ladder_rungs[0].shape, plan.full_shape)
        )
        self.fidelity = Fidelity.proxy(task, plan.proxy_shape)
        self.spaces = {}
        for name in task.search.spaces:
            space = space_for(task, name)
            reason = space.supports(self.ctx)
            if reason:
                from mednas.errors import ConfigError

                where = (
                    ""
                    if self.ladder_rungs is None
                    else f" (at the ladder's lowest rung, {list(self.ladder_rungs[0].shape)}: raise its scale in "
                    "search.ladder.rungs)"
                )
                raise ConfigError(f"search.spaces: {reason}{where}")
            self.spaces[name] = space
        multi = task.objective.multi_objective
        # Ladder trials are judged at rung ends only (see mednas.study._ladder), never per epoch.
        self.pruner = (
            MultiObjectivePruner(task.search.pruner) if multi and self.ladder_rungs is None else None
        )
        self.on_epoch = on_epoch

    def rung_data(self, k: int) -> tuple[ArrayData, ArrayData]:
        """Ladder rung ``k``'s training and validation arrays (loaded through the proxy cache once)."""
        assert self.ladder_rungs is not None
        if self._rung_data is None:
            self._rung_data = [
                Fidelity.proxy(self.task, r.shape, epochs=r.epochs, subset=1.0).load(
                    self.plan, seed=self.task.search.seed
                )
                for r in self.ladder_rungs
            ]
            # The top rung is what a complete ladder trial is scored and recorded on.
            self.train, self.val = self._rung_data[-1]
        return self._rung_data[k]

    def __call__(self, trial: Any) -> float | list[float]:
        t_call = time.perf_counter()
        log = _TrialLog(self.run_dir.trial_dir(trial.number) / "log.txt")
        try:
            return self._trial(trial, log, t_call)
        finally:
            log.flush()

    def _trial(self, trial: Any, log: _TrialLog, t_call: float) -> float | list[float]:
        self.run_dir.trial_dir(trial.number).mkdir(parents=True, exist_ok=True)
        run = _TrialRun(trial, log, self._open_record(trial), t_call)
        draw = self._sample(run)
        twin = self._completed_twin(trial, draw.spec.hash, draw.loss, draw.sampling)
        if twin is not None:
            return self._reuse(run, twin)
        paused_twin = self._climbing_twin(trial, draw)
        if paused_twin is not None:
            self._skip_climbing_twin(run, paused_twin)
        run.t0 = time.perf_counter()
        costs = self._price(run, draw)
        if self.ladder_rungs is not None:
            values = climb(self, run, draw, costs)
            return values if self.task.objective.multi_objective else values[0]
        reporter = _EpochReporter(self, trial, log)
        trained = self._train(run, draw, reporter)
        values = self._score(run, trained, costs)
        self._record(run, trained, reporter.marks)
        return values if self.task.objective.multi_objective else values[0]

    # -- the steps of a trial

    def _open_record(self, trial: Any) -> TrialRecord:
        """Start the trial's record: its seed (derived from the task seed and trial number), host and retry."""
        from mednas.train import derive_seed

        seed = derive_seed(self.task.search.seed, trial.number)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("host", host_tag())
        trial.set_user_attr("pid", os.getpid())
        record = TrialRecord(trial=trial.number, seed=seed, state="running")
        original = retry_of(trial)
        if original is not None:
            record = record.updated(retry_of=original)
            trial.set_user_attr("retry_of", original)
        return record

    def _sample(self, run: _TrialRun) -> _Draw:
        """Sample a family, its spec and (where the task searches them) the loss and batch sampling."""
        trial = run.trial
        family = trial.suggest_categorical("family", list(self.spaces))
        space = self.spaces[family]
        spec = space.sample(trial, self.ctx)
        # Imbalance handling is part of the search when the task lists choices (one remedy at a time).
        loss, sampling = suggest_imbalance(trial, self.task)
        write_json(self.run_dir.trial_dir(trial.number) / "spec.json", spec.to_dict())
        run.note(family=family, spec_hash=spec.hash, target=spec.target, loss=loss, sampling=sampling)
        trial.set_user_attr("spec_hash", spec.hash)
        seed = run.record.seed
        run.log(
            f"spec {spec.class_name} {spec.hash} (family {family}), loss {loss}, sampling {sampling}, seed {seed}"
        )
        return _Draw(family, space, spec, loss, sampling, seed)

    def _reuse(self, run: _TrialRun, twin: Any) -> float | list[float]:
        """The sampler proposed a candidate that was already trained: reuse its score, don't retrain.

        The scores come from the twin's record; a twin trained in another machine's run directory has none here,
        so this trial's record then holds only what it sampled.
        """
        trial = run.trial
        previous = self.run_dir.trial(twin.number)
        copied = previous.to_json() if previous is not None else {}
        run.note(
            **{k: copied[k] for k in _REUSED if k in copied},
            state="complete",
            duplicate_of=twin.number,
            seconds=0.0,
        )
        if "fidelity" in copied:
            run.note(compute={"voxel_epochs": 0, "seconds": 0.0})
        for key in _REUSED_ATTRS:
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        trial.set_user_attr("duplicate_of", twin.number)
        self.run_dir.write_trial(run.record)
        run.log(f"same candidate as trial {twin.number}: its score is reused, nothing trained")
        return list(twin.values) if self.task.objective.multi_objective else float(twin.values[0])

    def _price(self, run: _TrialRun, draw: _Draw) -> dict[str, float]:
        """Price the candidate before any training (parameters, MACs, activations, latency); reject it over budget."""
        costs = self._estimate(run, draw)
        priced: dict[str, float] = {
            "params": float(costs.full.params),
            "macs": float(costs.one.macs),  # per image at full resolution
            "activation_mb": costs.full.activation_bytes / 2**20,  # one training batch at full resolution
        }
        run.note(
            params=costs.full.params,
            macs_proxy=costs.proxy.macs / self.task.training.batch_size,
            macs=costs.one.macs,
            activation_mb=priced["activation_mb"],
        )
        reason = self._over_budget(costs) or self._static_violation(priced)
        if reason:
            self._reject(run, reason)
        if self.needs_latency:
            figure = self._latency(run, costs.full_spec)
            priced["latency_ms"] = float(figure["median_ms"])
            run.note(latency_ms=priced["latency_ms"], latency=figure)
            reason = self._static_violation(priced, ("latency_ms",))
            if reason:
                self._reject(run, reason)
        if self.pruner is not None:
            run.trial.set_user_attr("static_secondary", self.pruner.static_secondary(self.task, priced))
        run.log(
            f"params {costs.full.params:,}, MACs/image full {costs.one.macs:.3g}, proxy {run.record.macs_proxy:.3g}"
            + (f", latency {_latency_text(run.record.latency)}" if run.record.latency else "")
        )
        return priced

    def _estimate(self, run: _TrialRun, draw: _Draw) -> _Costs:
        """Estimate the candidate's cost at the proxy and at full resolution (rejecting a spec that cannot run)."""
        from mednas.spaces import estimate_cost

        bs = self.task.training.batch_size
        try:
            cost_proxy = estimate_cost(draw.spec, self.ctx.input_shape, batch_size=bs)
            full_spec = draw.space.adapt_to_shape(draw.spec, self.plan.full_shape)
            same = full_spec.hash == draw.spec.hash and tuple(self.plan.full_shape) == tuple(
                self.ctx.input_shape
            )
            # Each estimate runs the network once on the meta device; MACs and activations scale with the batch.
            cost_full = cost_proxy if same else estimate_cost(full_spec, self.plan.full_shape, batch_size=bs)
        except ValueError as exc:
            self._reject(run, f"invalid for the input shape: {exc}")
        cost_one = dataclasses.replace(
            cost_full,
            macs=cost_full.macs // bs,
            activation_bytes=cost_full.activation_bytes // bs,
            batch_size=1,
        )
        return _Costs(proxy=cost_proxy, full=cost_full, one=cost_one, full_spec=full_spec)

    def _over_budget(self, costs: _Costs) -> str | None:
        """Why the candidate is over the search's static budget (``search.budget``), or None."""
        from mednas.spaces import check_budget

        b = self.task.search.budget
        reason = check_budget(costs.full, max_params=b.max_params, max_activation_mb=b.max_activation_mb)
        if not reason and b.max_macs is not None and costs.one.macs > b.max_macs:
            reason = f"MACs {costs.one.macs:.3g} > budget {b.max_macs:.3g}"
        return reason

    def _train(self, run: _TrialRun, draw: _Draw, reporter: Any, rung: RungRun | None = None) -> Any:
        """Proxy-train the candidate (or one ``rung`` of the ladder); record a pruned trial (then re-raise) or a
        failed one (then raise)."""
        import optuna

        from mednas.train import TrainingDiverged

        try:
            with Heartbeat(run.trial):
                return self._fit(run, draw, reporter, rung)
        except optuna.TrialPruned as exc:
            if run.record.state == "infeasible":
                raise  # rejected inside the training block (out of memory twice); already recorded
            self._pruned(run, exc, reporter)
            raise
        except TrainingDiverged as exc:
            self._fail(run, f"diverged: {exc}")
        except Exception as exc:  # noqa: BLE001 - any candidate may break; the search must go on
            run.log(traceback.format_exc())
            self._fail(run, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _pruned(self, run: _TrialRun, exc: BaseException, reporter: Any) -> None:
        """Record a trial the pruner (or the not-learning check) stopped, with the epochs it ran."""
        fields: dict[str, Any] = {
            "state": "pruned",
            "reason": str(exc),
            "seconds": time.perf_counter() - run.t0,
        }
        if reporter.dead_reason:
            # Flagged, not merely scored low: left out of ranking and of the proxy-fidelity statistics.
            fields.update(learned=False, not_learning=reporter.dead_reason)
            run.trial.set_user_attr("learned", False)
        fields.update(reporter.pruned_fields(run))
        fields["timing"] = _timing(run.t_call, reporter.marks)
        run.note(**fields)
        self.run_dir.write_trial(run.record)
        run.log(str(exc))

    def _fit(self, run: _TrialRun, draw: _Draw, reporter: Any, rung: RungRun | None = None) -> Any:
        """Train through the one candidate trainer; out of GPU memory, once more with half the batch, then reject.

        ``rung``: a ladder rung's data, fidelity and starting weights instead of the flat proxy's.
        """
        from mednas.study._inherit import flat_start
        from mednas.train import train_candidate

        train, val, fidelity = (
            (self.train, self.val, self.fidelity) if rung is None else (rung.train, rung.val, rung.fidelity)
        )
        # Only a carried rung passes starting weights, so the flat proxy calls the trainer exactly as before.
        extra = {"init_state": rung.init_state} if rung is not None and rung.init_state is not None else {}
        if rung is None:  # the flat proxy: a parent candidate's weights with search.inherit
            extra = flat_start(self, run, draw)
        if rung is not None and rung.checkpoint is not None:
            # Written every epoch: a killed trial's retry resumes the rung from it.
            extra["checkpoint"] = rung.checkpoint

        def attempt(batch_size: int | None) -> Any:
            return train_candidate(
                self.task,
                draw.spec,
                train,
                val,
                fidelity,
                seed=draw.seed,
                device=self.device,
                loss=draw.loss,
                sampling=draw.sampling,
                batch_size=batch_size,
                on_epoch=reporter,
                **extra,
            )

        full_batch = self.task.training.batch_size
        try:
            return attempt(None)
        except Exception as exc:
            if not _is_out_of_memory(exc) or full_batch < 2:
                raise
        _free_gpu_memory()
        if rung is not None and rung.checkpoint is not None:
            rung.checkpoint.unlink(missing_ok=True)  # the rung starts again at the smaller batch
        half = max(1, full_batch // 2)
        run.log(f"out of memory at batch size {full_batch}; retrying with {half}")
        run.note(oom_retry_batch_size=half)
        try:
            return attempt(half)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
        _free_gpu_memory()
        self._reject(run, f"out of GPU memory at batch size {half * 2} and {half}")

    def _score(self, run: _TrialRun, trained: Any, costs: dict[str, float]) -> list[float]:
        """Score the best epoch's validation predictions: objective values, metrics, constraints; into the record."""
        from mednas.metrics._objective import constraint_violations, objective_report

        task, fit_result = self.task, trained.result
        report = objective_report(task, fit_result.best_outputs, self.val, seed=run.record.seed)
        value = float(fit_result.best_value) if math.isfinite(fit_result.best_value) else 0.0
        values = [value] + [
            self._secondary_value(m.metric, report["metrics"], costs) for m in task.objective.secondary
        ]
        violations = constraint_violations(task, report["metrics"], costs)
        feasible = all(v <= 0 for v in violations)
        run.note(
            state="complete",
            objective={"name": task.objective.name, "value": value},
            values=values,
            metrics=report["metrics"],
            operating_point=report.get("operating_point"),
            constraints=[
                {"constraint": str(c), "violation": v} for c, v in zip(task.objective.constraints, violations)
            ],
            feasible=feasible,
            best_epoch=fit_result.best_epoch,
            epochs=len(fit_result.history),
            history=[
                {"epoch": h.epoch, "train_loss": h.train_loss, "value": h.value} for h in fit_result.history
            ],
            seconds=time.perf_counter() - run.t0,
            learned=fit_result.learned,
            not_learning=fit_result.not_learning_reason,
            divisor=list(trained.divisor),
        )
        run.trial.set_user_attr("learned", fit_result.learned)
        run.trial.set_user_attr("constraints", violations)
        run.trial.set_user_attr("feasible", feasible)
        return values

    def _record(self, run: _TrialRun, trained: Any, marks: list[float]) -> None:
        """Write the trial's predictions, proxy weights (``search.keep_weights``) and record."""
        from mednas.metrics._objective import prediction_record
        from mednas.study._inherit import keep_parent_weights
        from mednas.train import save_weights

        task, fit_result, tdir = self.task, trained.result, self.run_dir.trial_dir(run.trial.number)
        write_json(
            tdir / "predictions.json", prediction_record(task, fit_result.best_outputs, self.val, split="val")
        )
        if task.search.keep_weights and fit_result.best_state is not None:
            # Proxy weights of the leading trials let `mednas export` work before any retraining.
            save_weights(tdir / "model.pt", fit_result.best_state)
            run.note(weights="model.pt")
        keep_parent_weights(self.run_dir, task, run.trial.number, fit_result.best_state)  # search.inherit
        run.note(timing=_timing(run.t_call, marks))
        self.run_dir.write_trial(run.record)
        rec = run.record
        violated = [c["constraint"] for c in rec.constraints or [] if c["violation"] > 0]
        run.log(
            f"complete: {task.objective.name} = {rec.objective_value:.4f} (best epoch {fit_result.best_epoch}, "
            f"{rec.seconds:.1f}s)"
            + ("" if rec.learned is not False else f"; flagged: never started learning ({rec.not_learning})")
            + ("" if rec.feasible else "; violates " + ", ".join(violated))
        )

    # -- helpers

    @property
    def needs_latency(self) -> bool:
        return self.task.objective.measures_latency

    def _static_violation(
        self, costs: dict[str, float], only: tuple[str, ...] = ("params", "macs", "activation_mb")
    ) -> str | None:
        for c in self.task.objective.constraints:
            if c.metric in only and c.metric in costs and c.violation(costs[c.metric]) > 0:
                return f"{c.metric} {costs[c.metric]:.4g} violates the constraint {c}"
        return None

    def _latency(self, run: _TrialRun, spec: Any) -> dict[str, Any]:
        """The candidate's latency figure on the task's runtime at the full shape, from the run's cache or timed now.

        Returns:
            :meth:`mednas.runtime.LatencyFigure.to_dict` with ``cached`` (true when an earlier trial timed the same
            network with the same setting on the same hardware).
        """
        from mednas.runtime import LatencyFigure, device_name, measure_latency
        from mednas.spec import build

        cfg = self.task.objective.latency
        shape = [int(n) for n in (self.task.in_channels, *(cfg.input_shape or self.plan.full_shape))]
        device = cfg.measured_on(self.device)
        key = {
            "spec_hash": spec.hash,
            "runtime": cfg.runtime,
            "precision": cfg.precision,
            "threads": cfg.threads,
            "batch": cfg.batch,
            "shape": shape,
            "device": device,
            "hardware": device_name(device),
        }
        cached = self.run_dir.cached_latency(key)
        try:
            if cached is not None:
                return LatencyFigure.from_dict(cached).to_dict() | {"cached": True}
        except (TypeError, ValueError):  # an entry this mednas cannot read: timed again (and replaced)
            pass
        try:
            figure = measure_latency(
                build(spec),
                shape,
                runtime=cfg.runtime,
                precision=cfg.precision,
                threads=cfg.threads,
                batch=cfg.batch,
                warmup=cfg.warmup,
                repeats=cfg.repeats,
                device=device,
            ).to_dict()
        except Exception as exc:  # noqa: BLE001 - a candidate the runtime cannot run fails; the search goes on
            run.log(traceback.format_exc())
            first = str(exc).splitlines()[0] if str(exc) else ""
            self._fail(run, f"latency on {cfg.runtime}: {type(exc).__name__}: {first}")
        self.run_dir.cache_latency(key, figure)
        return figure | {"cached": False}

    @staticmethod
    def _secondary_value(metric: str, metrics: dict[str, Any], costs: dict[str, float]) -> float:
        if metric in costs:
            return float(costs[metric])
        value = (metrics.get(metric) or {}).get("value")
        return float(value) if value is not None and math.isfinite(value) else 0.0

    def _climbing_twin(self, trial: Any, draw: _Draw) -> Any:
        """Deferred ladder promotion: a trial of the same candidate paused on (or still climbing) the ladder.

        Every ladder trial pauses at its rung ends, so the completed-twin check above finds none until the top
        rung is reached; without this, a candidate sampled again trains rung 0 again and can take two of a rung's
        places. (A continuation is its paused trial's twin by design.)
        """
        from optuna.trial import TrialState

        from mednas.study._promotion import CONTINUES, PAUSED
        from mednas.study._study import deferred_promotion

        if not deferred_promotion(self.task) or CONTINUES in trial.user_attrs:
            return None
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.RUNNING)):
            if (
                t.number != trial.number
                and t.user_attrs.get("spec_hash") == draw.spec.hash
                and (PAUSED in t.user_attrs or t.state == TrialState.RUNNING)
                and "duplicate_of" not in t.user_attrs
                and t.params.get("loss", draw.loss) == draw.loss
                and t.params.get("sampling", draw.sampling) == draw.sampling
            ):
                return t
        return None

    def _skip_climbing_twin(self, run: _TrialRun, twin: Any) -> NoReturn:
        """End a trial whose candidate is already on the ladder: pruned, nothing trained, ``duplicate_of`` set."""
        import optuna

        reason = f"same candidate as trial {twin.number}, which is on the ladder: not trained again"
        run.note(state="pruned", duplicate_of=twin.number, reason=reason, seconds=0.0)
        run.note(fidelity="ladder", compute={"voxel_epochs": 0, "seconds": 0.0})
        run.trial.set_user_attr("duplicate_of", twin.number)
        self.run_dir.write_trial(run.record)
        run.log(reason)
        raise optuna.TrialPruned(reason)

    def _completed_twin(self, trial: Any, spec_hash: str, loss: str, sampling: str) -> Any:
        from optuna.trial import TrialState

        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (
                t.user_attrs.get("spec_hash") == spec_hash
                and t.values
                and "duplicate_of" not in t.user_attrs
                and t.params.get("loss", loss) == loss
                and t.params.get("sampling", sampling) == sampling
            ):
                return t
        return None

    def _reject(self, run: _TrialRun, reason: str) -> NoReturn:
        """Record the candidate as infeasible before training and prune it (Optuna counts it as pruned)."""
        import optuna

        run.note(state="infeasible", reason=reason)
        run.trial.set_user_attr("infeasible", reason)
        self.run_dir.write_trial(run.record)
        run.log(f"rejected before training: {reason}")
        raise optuna.TrialPruned(f"infeasible: {reason}")

    def _fail(self, run: _TrialRun, reason: str) -> NoReturn:
        """Record the trial as failed with ``reason`` and end it (Optuna records FAIL; the search goes on)."""
        run.note(state="failed", reason=reason, seconds=time.perf_counter() - run.t0)
        self.run_dir.write_trial(run.record)
        run.log(f"failed: {reason}")
        raise TrialFailed(reason)


class _EpochReporter:
    """The training loop's per-epoch callback of one trial: log the epoch, report it to Optuna, prune.

    A run that has not started learning at ``dead_check_epoch`` is pruned and flagged (``dead_reason``). ``marks``
    holds the start of epoch 1 and the end of each epoch's callback, for the trial record's ``timing``.
    """

    def __init__(self, objective: TrialObjective, trial: Any, log: _TrialLog) -> None:
        self.trial, self.log = trial, log
        self.epochs = objective.fidelity.epochs
        self.check_epoch = objective.task.dead_check_epoch
        self.progress = objective.on_epoch
        self.pruner = objective.pruner
        self.marks: list[float] = []
        self.dead_reason: str | None = None

    def __call__(self, result: Any) -> None:
        if not self.marks:
            self.marks.append(time.perf_counter() - result.seconds)
        try:
            self._report(result)
        finally:
            self.marks.append(time.perf_counter())

    def pruned_fields(self, run: _TrialRun) -> dict[str, Any]:
        """What a pruned trial's record adds: the per-epoch values it reported (its ``history``)."""
        return {"history": _partial_history(self.trial)}

    def _report(self, result: Any) -> None:
        import optuna

        trial = self.trial
        self.log(
            f"epoch {result.epoch}/{self.epochs}: loss {result.train_loss:.4f}, objective {result.value:.4f} "
            f"({result.seconds:.1f}s)"
        )
        value = result.value if math.isfinite(result.value) else 0.0
        if self.progress:
            self.progress(trial.number, result.epoch, self.epochs)
        # Report first, so the pruned trial's history holds the epoch it was judged on.
        prune = self.pruner.should_prune(trial, result.epoch, value) if self.pruner is not None else None
        if self.pruner is None:
            trial.report(value, result.epoch)
        if self.check_epoch and result.epoch == self.check_epoch and result.not_learning:
            self.dead_reason = result.not_learning
            raise optuna.TrialPruned(f"not learning: {result.not_learning} (checked at epoch {result.epoch})")
        if self.pruner is not None:
            # Optuna cannot prune multi-objective studies: prune on the primary clinical metric ourselves.
            if prune:
                raise optuna.TrialPruned(
                    f"pruned at epoch {result.epoch} (primary objective {value:.4f} below the median "
                    "of trials at least as cheap on the size/speed objectives)"
                )
            return
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch} (objective {value:.4f})")


def _latency_text(figure: dict[str, Any]) -> str:
    """``3.41 ms (p90 3.90) on onnxruntime fp32, 1 thread, AMD EPYC 7B13`` (``, cached`` when reused)."""
    threads = int(figure.get("threads") or 1)
    return (
        f"{figure['median_ms']:.2f} ms (p90 {figure['p90_ms']:.2f}) on {figure['runtime']} {figure['precision']}, "
        f"{threads} thread{'s' if threads != 1 else ''}, {figure['hardware']}"
        + (", cached" if figure.get("cached") else "")
    )


def _partial_history(trial: Any) -> list[dict[str, Any]]:
    """The per-epoch values a pruned trial reported, for its record's ``history``."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    # Multi-objective studies keep the primary objective's per-epoch values in a user attribute instead.
    values = frozen.intermediate_values or frozen.user_attrs.get("primary_history") or {}
    return [{"epoch": int(k), "value": v} for k, v in sorted(values.items(), key=lambda kv: int(kv[0]))]


def _timing(t_call: float, marks: list[float]) -> dict[str, Any]:
    """Where a trial's wall time went: before the first epoch, each epoch (with its callback), after the last.

    ``after_last_epoch_s`` runs until the trial record is written (the write itself and Optuna's bookkeeping
    afterwards are not in it).
    """
    now = time.perf_counter()
    if not marks:
        return {"before_first_epoch_s": round(now - t_call, 4), "epochs_s": [], "after_last_epoch_s": 0.0}
    return {
        "before_first_epoch_s": round(marks[0] - t_call, 4),
        "epochs_s": [round(b - a, 4) for a, b in zip(marks, marks[1:])],
        "after_last_epoch_s": round(now - marks[-1], 4),
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
