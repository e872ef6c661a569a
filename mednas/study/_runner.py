"""Run a search: sample a spec per trial, reject it statically if over budget, proxy-train it, score it.

This module adapts the training loop's per-epoch callback to Optuna's ``trial.report``/``should_prune`` and
records every trial in ``trials/<n>/`` (spec.json, metrics.json, log.txt). Continuing a study never repeats a
completed trial; a trial that raises or diverges is recorded as failed with its reason and the search goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from mednas.config import TaskConfig, config_hash, task_to_dict, with_settings
from mednas.data import ArrayData, DataPlan, plan_data, read_or_create_salt
from mednas.data._cases import new_salt
from mednas.io._atomic import write_json, write_text, write_yaml
from mednas.rundir import RunDir, check_run_dir, claim_run_dir, environment_info
from mednas.study._recovery import Heartbeat, host_tag, recover_stale_trials, retry_of
from mednas.study._study import make_storage, open_study
from mednas.study._summary import clear_stop, pareto_front, record_stop, write_summary
from mednas.train._candidate import Fidelity, space_context, space_for, suggest_imbalance

if TYPE_CHECKING:
    from mednas.spaces import SpaceContext

logger = logging.getLogger("mednas.study")

__all__ = ["SearchResult", "run_search", "proxy_context", "suggest_imbalance"]


@dataclass
class SearchResult:
    """What :func:`run_search` returns: the run directory and its ``summary.json`` content."""

    run_dir: Path
    summary: dict[str, Any]


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


class _TrialObjective:
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
    ) -> None:
        self.task, self.plan, self.run_dir = task, plan, run_dir
        self.train, self.val, self.device = train, val, device
        self.ctx = proxy_context(task, plan)
        self.fidelity = Fidelity.proxy(task, plan.proxy_shape)
        self.spaces = {}
        for name in task.search.spaces:
            space = space_for(task, name)
            reason = space.supports(self.ctx)
            if reason:
                from mednas.errors import ConfigError

                raise ConfigError(f"search.spaces: {reason}")
            self.spaces[name] = space
        self.pruner = _MultiObjectivePruner(task.search.pruner) if task.objective.multi_objective else None
        self.on_epoch = on_epoch

    def __call__(self, trial: Any) -> float | list[float]:
        t_call = time.perf_counter()
        log = _TrialLog(self.run_dir.trial_dir(trial.number) / "log.txt")
        try:
            return self._trial(trial, log, t_call)
        finally:
            log.flush()

    def _trial(self, trial: Any, log: _TrialLog, t_call: float) -> float | list[float]:
        self.run_dir.trial_dir(trial.number).mkdir(parents=True, exist_ok=True)
        record = self._open_record(trial)
        draw = self._sample(trial, record, log)
        twin = self._completed_twin(trial, draw.spec.hash, draw.loss, draw.sampling)
        if twin is not None:
            return self._reuse(trial, twin, record, log)
        t0 = time.perf_counter()
        costs = self._price(trial, draw, record, log)
        reporter = _EpochReporter(self, trial, log)
        trained = self._train(trial, draw, record, reporter, t0, t_call)
        values = self._score(trial, trained, costs, record, t0)
        self._record(trial, trained, record, log, t_call, reporter.marks)
        return values if self.task.objective.multi_objective else values[0]

    # -- the steps of a trial

    def _open_record(self, trial: Any) -> dict[str, Any]:
        """Start the trial's record: its seed (derived from the task seed and trial number), host and retry."""
        from mednas.train import derive_seed

        seed = derive_seed(self.task.search.seed, trial.number)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("host", host_tag())
        trial.set_user_attr("pid", os.getpid())
        record: dict[str, Any] = {"trial": trial.number, "seed": seed, "state": "running"}
        original = retry_of(trial)
        if original is not None:
            record["retry_of"] = original
            trial.set_user_attr("retry_of", original)
        return record

    def _sample(self, trial: Any, record: dict[str, Any], log: _TrialLog) -> _Draw:
        """Sample a family, its spec and (where the task searches them) the loss and batch sampling."""
        family = trial.suggest_categorical("family", list(self.spaces))
        space = self.spaces[family]
        spec = space.sample(trial, self.ctx)
        # Imbalance handling is part of the search when the task lists choices (one remedy at a time).
        loss, sampling = suggest_imbalance(trial, self.task)
        write_json(self.run_dir.trial_dir(trial.number) / "spec.json", spec.to_dict())
        record.update(family=family, spec_hash=spec.hash, target=spec.target, loss=loss, sampling=sampling)
        trial.set_user_attr("family", family)
        trial.set_user_attr("spec_hash", spec.hash)
        log(
            f"spec {spec.class_name} {spec.hash} (family {family}), loss {loss}, sampling {sampling}, seed {record['seed']}"
        )
        return _Draw(family, space, spec, loss, sampling, record["seed"])

    def _reuse(self, trial: Any, twin: Any, record: dict[str, Any], log: _TrialLog) -> float | list[float]:
        """The sampler proposed a candidate that was already trained: reuse its score, don't retrain."""
        previous = self.run_dir.read_json(self.run_dir.trial_dir(twin.number) / "metrics.json")
        record.update(
            {
                k: previous[k]
                for k in (
                    "params",
                    "macs",
                    "macs_proxy",
                    "activation_mb",
                    "latency_ms",
                    "objective",
                    "values",
                    "metrics",
                    "operating_point",
                    "best_epoch",
                    "learned",
                    "not_learning",
                    "constraints",
                    "feasible",
                )
                if k in previous
            }
        )
        record.update(state="complete", duplicate_of=twin.number, seconds=0.0)
        for key in (
            "params",
            "macs",
            "latency_ms",
            "learned",
            "not_learning",
            "threshold",
            "constraints",
            "feasible",
        ):
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        trial.set_user_attr("duplicate_of", twin.number)
        write_json(self.run_dir.trial_dir(trial.number) / "metrics.json", record)
        log(f"same candidate as trial {twin.number}: its score is reused, nothing trained")
        return list(twin.values) if self.task.objective.multi_objective else float(twin.values[0])

    def _price(self, trial: Any, draw: _Draw, record: dict[str, Any], log: _TrialLog) -> dict[str, float]:
        """Price the candidate before any training (parameters, MACs, activations, latency); reject it over budget."""
        from mednas.spaces import check_budget, estimate_cost

        task, bs = self.task, self.task.training.batch_size
        try:
            cost_proxy = estimate_cost(draw.spec, self.ctx.input_shape, batch_size=bs)
            full_spec = draw.space.adapt_to_shape(draw.spec, self.plan.full_shape)
            same = full_spec.hash == draw.spec.hash and tuple(self.plan.full_shape) == tuple(
                self.ctx.input_shape
            )
            # Each estimate runs the network once on the meta device; MACs and activations scale with the batch.
            cost_full = cost_proxy if same else estimate_cost(full_spec, self.plan.full_shape, batch_size=bs)
            cost_one = dataclasses.replace(
                cost_full,
                macs=cost_full.macs // bs,
                activation_bytes=cost_full.activation_bytes // bs,
                batch_size=1,
            )
        except ValueError as exc:
            self._reject(trial, record, f"invalid for the input shape: {exc}", log)
        costs: dict[str, float] = {
            "params": float(cost_full.params),
            "macs": float(cost_one.macs),  # per image at full resolution
            "activation_mb": cost_full.activation_bytes / 2**20,  # one training batch at full resolution
        }
        record.update(
            params=cost_full.params,
            macs_proxy=cost_proxy.macs / bs,
            macs=cost_one.macs,
            activation_mb=costs["activation_mb"],
        )
        trial.set_user_attr("params", cost_full.params)
        trial.set_user_attr("macs", cost_one.macs)
        b = task.search.budget
        reason = check_budget(cost_full, max_params=b.max_params, max_activation_mb=b.max_activation_mb)
        if not reason and b.max_macs is not None and cost_one.macs > b.max_macs:
            reason = f"MACs {cost_one.macs:.3g} > budget {b.max_macs:.3g}"
        reason = reason or self._static_violation(costs)
        if reason:
            self._reject(trial, record, reason, log)
        if self.needs_latency:
            costs["latency_ms"] = self._latency_ms(full_spec)
            record["latency_ms"] = costs["latency_ms"]
            trial.set_user_attr("latency_ms", costs["latency_ms"])
            reason = self._static_violation(costs, ("latency_ms",))
            if reason:
                self._reject(trial, record, reason, log)
        if self.pruner is not None:
            trial.set_user_attr("static_secondary", self.pruner.static_secondary(task, costs))
        log(
            f"params {cost_full.params:,}, MACs/image full {cost_one.macs:.3g}, proxy {record['macs_proxy']:.3g}"
            + (f", latency {costs['latency_ms']:.2f} ms" if "latency_ms" in costs else "")
        )
        return costs

    def _train(
        self,
        trial: Any,
        draw: _Draw,
        record: dict[str, Any],
        reporter: _EpochReporter,
        t0: float,
        t_call: float,
    ) -> Any:
        """Proxy-train the candidate; record a pruned trial (then re-raise) or a failed one (then raise)."""
        import optuna

        from mednas.train import TrainingDiverged

        log = reporter.log
        try:
            with Heartbeat(trial):
                return self._fit(trial, draw, record, log, reporter)
        except optuna.TrialPruned as exc:
            if record.get("state") == "infeasible":
                raise  # rejected inside the training block (out of memory twice); already recorded
            record.update(state="pruned", reason=str(exc), seconds=time.perf_counter() - t0)
            if reporter.dead_reason:
                # Flagged, not merely scored low: left out of ranking and of the proxy-fidelity statistics.
                record.update(learned=False, not_learning=reporter.dead_reason)
                trial.set_user_attr("learned", False)
                trial.set_user_attr("not_learning", reporter.dead_reason)
            self._write_partial_history(trial, record)
            record["timing"] = _timing(t_call, reporter.marks)
            write_json(self.run_dir.trial_dir(trial.number) / "metrics.json", record)
            log(str(exc))
            raise
        except TrainingDiverged as exc:
            self._fail(trial, record, f"diverged: {exc}", log, t0)
        except Exception as exc:  # noqa: BLE001 - any candidate may break; the search must go on
            log(traceback.format_exc())
            self._fail(
                trial,
                record,
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                log,
                t0,
            )

    def _fit(
        self, trial: Any, draw: _Draw, record: dict[str, Any], log: _TrialLog, reporter: _EpochReporter
    ) -> Any:
        """Train through the one candidate trainer; out of GPU memory, once more with half the batch, then reject."""
        from mednas.train import train_candidate

        def attempt(batch_size: int | None) -> Any:
            return train_candidate(
                self.task,
                draw.spec,
                self.train,
                self.val,
                self.fidelity,
                seed=draw.seed,
                device=self.device,
                loss=draw.loss,
                sampling=draw.sampling,
                batch_size=batch_size,
                on_epoch=reporter,
            )

        full_batch = self.task.training.batch_size
        try:
            return attempt(None)
        except Exception as exc:
            if not _is_out_of_memory(exc) or full_batch < 2:
                raise
        _free_gpu_memory()
        half = max(1, full_batch // 2)
        log(f"out of memory at batch size {full_batch}; retrying with {half}")
        record["oom_retry_batch_size"] = half
        try:
            return attempt(half)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
        _free_gpu_memory()
        self._reject(trial, record, f"out of GPU memory at batch size {half * 2} and {half}", log)

    def _score(
        self, trial: Any, trained: Any, costs: dict[str, float], record: dict[str, Any], t0: float
    ) -> list[float]:
        """Score the best epoch's validation predictions: objective values, metrics, constraints; into the record."""
        from mednas.metrics._objective import constraint_violations, objective_report

        task, fit_result = self.task, trained.result
        report = objective_report(task, fit_result.best_outputs, self.val, seed=record["seed"])
        value = float(fit_result.best_value) if math.isfinite(fit_result.best_value) else 0.0
        values = [value] + [
            self._secondary_value(m.metric, report["metrics"], costs) for m in task.objective.secondary
        ]
        violations = constraint_violations(task, report["metrics"], costs)
        feasible = all(v <= 0 for v in violations)
        record.update(
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
            seconds=time.perf_counter() - t0,
            learned=fit_result.learned,
            not_learning=fit_result.not_learning_reason,
            divisor=list(trained.divisor),
        )
        trial.set_user_attr("learned", fit_result.learned)
        if fit_result.not_learning_reason:
            trial.set_user_attr("not_learning", fit_result.not_learning_reason)
        trial.set_user_attr("constraints", violations)
        trial.set_user_attr("feasible", feasible)
        if report.get("operating_point"):
            trial.set_user_attr("threshold", report["operating_point"].get("threshold"))
        return values

    def _record(
        self,
        trial: Any,
        trained: Any,
        record: dict[str, Any],
        log: _TrialLog,
        t_call: float,
        marks: list[float],
    ) -> None:
        """Write the trial's predictions, proxy weights (``search.keep_weights``) and ``metrics.json``."""
        from mednas.metrics._objective import prediction_record
        from mednas.train import save_weights

        task, fit_result, tdir = self.task, trained.result, self.run_dir.trial_dir(trial.number)
        write_json(
            tdir / "predictions.json", prediction_record(task, fit_result.best_outputs, self.val, split="val")
        )
        if task.search.keep_weights and fit_result.best_state is not None:
            # Proxy weights of the leading trials let `mednas export` work before any retraining.
            save_weights(tdir / "model.pt", fit_result.best_state)
            record["weights"] = "model.pt"
        record["timing"] = _timing(t_call, marks)
        write_json(tdir / "metrics.json", record)
        violated = [c["constraint"] for c in record["constraints"] if c["violation"] > 0]
        log(
            f"complete: {task.objective.name} = {record['objective']['value']:.4f} (best epoch {fit_result.best_epoch}, "
            f"{record['seconds']:.1f}s)"
            + (
                ""
                if fit_result.learned
                else f"; flagged: never started learning ({fit_result.not_learning_reason})"
            )
            + ("" if record["feasible"] else "; violates " + ", ".join(violated))
        )

    # -- helpers

    @property
    def needs_latency(self) -> bool:
        o = self.task.objective
        return any(c.metric == "latency_ms" for c in o.constraints) or any(
            m.metric == "latency_ms" for m in o.secondary
        )

    def _static_violation(
        self, costs: dict[str, float], only: tuple[str, ...] = ("params", "macs", "activation_mb")
    ) -> str | None:
        for c in self.task.objective.constraints:
            if c.metric in only and c.metric in costs and c.violation(costs[c.metric]) > 0:
                return f"{c.metric} {costs[c.metric]:.4g} violates the constraint {c}"
        return None

    def _latency_ms(self, spec: Any) -> float:
        """Median forward time (ms) of one float32 input of the declared shape on the trial's device."""
        import torch

        from mednas.spec import build

        shape = tuple(self.task.objective.latency.input_shape or self.plan.full_shape)
        model = build(spec).to(self.device).eval()
        x = torch.randn(1, self.task.in_channels, *shape, device=self.device)
        times = []
        with torch.inference_mode():
            for i in range(self.task.objective.latency.repeats + 2):
                if self.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model(x)
                if self.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i >= 2:
                    times.append((time.perf_counter() - t) * 1000)
        return float(np.median(times))

    @staticmethod
    def _secondary_value(metric: str, metrics: dict[str, Any], costs: dict[str, float]) -> float:
        if metric in costs:
            return float(costs[metric])
        value = (metrics.get(metric) or {}).get("value")
        return float(value) if value is not None and math.isfinite(value) else 0.0

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

    def _write_partial_history(self, trial: Any, record: dict[str, Any]) -> None:
        frozen = trial.study._storage.get_trial(trial._trial_id)
        # Multi-objective studies keep the primary objective's per-epoch values in a user attribute instead.
        values = frozen.intermediate_values or frozen.user_attrs.get("primary_history") or {}
        record["history"] = [
            {"epoch": int(k), "value": v} for k, v in sorted(values.items(), key=lambda kv: int(kv[0]))
        ]

    def _reject(
        self, trial: Any, record: dict[str, Any], reason: str, log: Callable[[str], None]
    ) -> NoReturn:
        import optuna

        record.update(state="infeasible", reason=reason)
        trial.set_user_attr("infeasible", reason)
        write_json(self.run_dir.trial_dir(trial.number) / "metrics.json", record)
        log(f"rejected before training: {reason}")
        raise optuna.TrialPruned(f"infeasible: {reason}")

    def _fail(
        self, trial: Any, record: dict[str, Any], reason: str, log: Callable[[str], None], t0: float
    ) -> NoReturn:
        record.update(state="failed", reason=reason, seconds=time.perf_counter() - t0)
        trial.set_user_attr("fail_reason", reason)
        write_json(self.run_dir.trial_dir(trial.number) / "metrics.json", record)
        log(f"failed: {reason}")
        raise _TrialFailed(reason)


class _EpochReporter:
    """The training loop's per-epoch callback of one trial: log the epoch, report it to Optuna, prune.

    A run that has not started learning at ``dead_check_epoch`` is pruned and flagged (``dead_reason``). ``marks``
    holds the start of epoch 1 and the end of each epoch's callback, for the trial record's ``timing``.
    """

    def __init__(self, objective: _TrialObjective, trial: Any, log: _TrialLog) -> None:
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


class _MultiObjectivePruner:
    """Median pruning on the primary objective for multi-objective studies (Optuna's pruners can't).

    A trial is compared only with trials that are at least as good on every secondary objective known before
    training (params, MACs, latency): a small network with a modest primary score may be on the Pareto front,
    and pruning it against bigger networks would empty the front of exactly the trade-offs it exists to show.

    Args:
        config: The task's ``search.pruner`` (``name``, ``warmup_epochs``, ``startup_trials``).
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    @staticmethod
    def static_secondary(task: TaskConfig, costs: dict[str, float]) -> list[float | None]:
        """The secondary objectives known before training (params, MACs, latency), each as "lower is better"."""
        return [
            (float(costs[m.metric]) * (1.0 if m.direction == "minimize" else -1.0))
            if m.metric in costs
            else None
            for m in task.objective.secondary
        ]

    def should_prune(self, trial: Any, epoch: int, value: float) -> bool:
        """Record ``value`` in the trial's ``primary_history``; True when it is below the cheaper trials' median."""
        from optuna.trial import TrialState

        cfg = self.config
        history = dict(trial.user_attrs.get("primary_history", {}))
        history[str(epoch)] = value
        trial.set_user_attr("primary_history", history)
        if cfg.name == "none" or epoch <= cfg.warmup_epochs:
            return False
        mine = trial.user_attrs.get("static_secondary") or []
        others = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if str(epoch) in t.user_attrs.get("primary_history", {}) and self._at_least_as_cheap(mine, t)
        ]
        if len([t for t in others if t.state == TrialState.COMPLETE]) < max(1, cfg.startup_trials):
            return False
        return value < float(np.median([t.user_attrs["primary_history"][str(epoch)] for t in others]))

    @staticmethod
    def _at_least_as_cheap(mine: list[float | None], other: Any) -> bool:
        theirs = other.user_attrs.get("static_secondary")
        if not mine or not theirs or len(theirs) != len(mine):
            return True
        return all(a is None or b is None or b <= a for a, b in zip(mine, theirs))


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


_gc_frozen = False


def _freeze_long_lived() -> None:
    """Move every live object to the garbage collector's permanent generation for the trials that follow.

    With torch, MONAI and Optuna imported, the full collection Optuna runs after every trial (``gc_after_trial``,
    which frees cycles that hold a trial's tensors) walked about 300,000 long-lived objects, 0.2 s a trial on the
    CPU machine; frozen, it walks only what trials made since (a few ms). Left alone when something else in
    the process froze objects already; :func:`_thaw_long_lived` undoes it when the search ends.
    """
    import gc

    global _gc_frozen
    if _gc_frozen or gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    _gc_frozen = True


def _thaw_long_lived() -> None:
    import gc

    global _gc_frozen
    if _gc_frozen:
        gc.unfreeze()
        _gc_frozen = False


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


class _TrialFailed(Exception):
    """A candidate failed; Optuna records the trial as FAIL and the search continues."""


def _drop_weights_outside_top(study: Any, rd: RunDir, keep: int) -> None:
    """Delete proxy weights of trials that are no longer among the ``keep`` best (or on the Pareto front)."""
    from mednas.study._summary import best_trials

    keepers = {t.number for t in best_trials(study, keep)} if keep else set()
    for path in rd.root.glob("trials/*/model.pt"):
        try:
            number = int(path.parent.name)
        except ValueError:
            continue
        if number not in keepers:
            path.unlink(missing_ok=True)


def _setup_file_logging(run_dir: RunDir) -> logging.Handler:
    handler = logging.FileHandler(run_dir.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("mednas")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def _count_finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def prepare_run(
    task: TaskConfig, run_dir: RunDir, device: str, *, settings: dict[str, Any] | None = None
) -> str:
    """Check the run directory (refusing a different config) and write resolved.yaml and env.json.

    ``resolved.yaml`` holds the settings this session runs with: the task after presets and ``--set``, with
    ``settings`` (dotted keys: what the command line chose, e.g. ``{"search.n_trials": 30}``) applied over it.
    Only keys outside the run's identity (see :func:`mednas.config.config_hash`) may be given, so a session
    that continues the run with another ``--n-trials`` keeps the study and updates the record.

    Called with the run directory claimed (:func:`mednas.rundir.claim_run_dir`); :func:`check_config` runs first,
    before anything is written.
    """
    chash = check_config(task, run_dir)
    effective = with_settings(task, settings) if settings else task
    if config_hash(effective) != chash:
        raise ValueError(f"prepare_run: {sorted(settings or {})} must not change the run's identity")
    write_yaml(run_dir.resolved, task_to_dict(effective))
    write_json(run_dir.env, environment_info(device, task.search.seed) | {"config_hash": chash})
    return chash


def _session_settings(
    n_trials: int, timeout: float | None, device: str, threads: int | None
) -> dict[str, Any]:
    """The command-line choices ``resolved.yaml`` records over the task (all outside the run's identity)."""
    settings: dict[str, Any] = {"search.n_trials": n_trials, "search.timeout": timeout, "device": device}
    if threads is not None:
        settings["training.threads"] = (
            threads  # --threads (an explicit choice; the automatic one is in the log)
        )
    return settings


def _stop_of(exc: BaseException) -> tuple[str, str]:
    """The ``summary.json`` stop reason and detail for a session that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt (Ctrl-C)"
    if isinstance(exc, SystemExit):
        return "interrupted", f"exit {exc.code}" + (" (SIGTERM)" if exc.code == 128 + 15 else "")
    from mednas.errors import MednasError

    # mednas's own errors are written to be free of identifying values; another exception's text may hold a file
    # name (of a patient), so only its type is recorded (the log has the rest).
    first = (str(exc).splitlines() or [""])[0][:200] if isinstance(exc, MednasError) else ""
    return "failed", f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _exit_on_sigterm() -> Any:
    """Turn SIGTERM into ``SystemExit(143)`` for this search, so that it records ``interrupted`` as it ends.

    Only in the main thread and where nobody installed a handler before. The running trial stays RUNNING in
    the storage (SystemExit passes through Optuna), so continuing the run retries it. Returns the undo.
    """
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_config(task: TaskConfig, run_dir: RunDir) -> str:
    """Return the task's config hash; refuse a run directory that holds a run of another configuration."""
    from mednas.config import load_yaml
    from mednas.errors import MednasError, RunDirError

    chash = config_hash(task)
    if run_dir.resolved.exists():
        from mednas.config import load_task

        try:
            previous = load_task(load_yaml(run_dir.resolved) | {})
        except MednasError as exc:
            raise RunDirError(
                f"{run_dir.resolved}: not a valid resolved task ({str(exc).splitlines()[0]}); "
                "use another --run-dir"
            ) from None
        if config_hash(previous) != chash:
            old, new = task_to_dict(previous), task_to_dict(task)
            diffs = _diff_keys(old, new)
            raise RunDirError(
                f"{run_dir.root} holds a run of a different configuration (differs in {', '.join(diffs[:4]) or 'settings'}); "
                "use another --run-dir, or the same settings to continue"
            )
    return chash


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if k in (
                "n_trials",
                "timeout",
                "max_failures",
                "keep_weights",
                "cache_dir",
                "description",
                "threads",
            ) or (prefix == "" and k == "device"):
                continue
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _count_busy(study: Any) -> int:
    from optuna.trial import TrialState

    return len(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    )


def run_search(
    task: TaskConfig,
    run_dir: str | os.PathLike[str],
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    show_progress: bool = True,
    workers: int = 1,
    gpus: list[int] | None = None,
    trials_per_gpu: int = 1,
    worker: bool = False,
    storage_timeout: float | None = None,
    threads: int | None = None,
) -> SearchResult:
    """Create or continue the run's study until it has ``n_trials`` finished (complete + pruned) trials.

    Args:
        task: The validated task.
        run_dir: Run directory (created if needed).
        storage: Optuna storage URL (default: SQLite inside the run directory).
        study_name: Study name (default: the task name).
        n_trials: Target number of finished trials (default: ``task.search.n_trials``).
        timeout: Seconds after which no new trial starts (default: ``task.search.timeout``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default: ``task.device``).
        show_progress: Show a progress bar on stderr.
        workers: Local worker processes sharing the study (this process is one of them).
        gpus: GPU indices; ``trials_per_gpu`` workers are packed onto each (overrides ``workers``).
        trials_per_gpu: Concurrent proxy trials per GPU.
        worker: This process was started by another ``mednas search`` as a worker: spawn nothing.
        storage_timeout: Seconds a PostgreSQL/MySQL server gets to connect and answer (default 10; a
            ``connect_timeout=`` in the URL wins).
        threads: CPU threads per process (default: ``training.threads``, else the usable CPUs divided by the
            local workers, fewer on a busy machine; see :func:`mednas._threads.plan_threads`).

    Raises:
        RunDirError: ``run_dir`` is a file, a folder that is not a mednas run, or a run of another configuration.
        ConfigError: The storage cannot be opened (nothing is written then) or holds a study of another config.

    Returns:
        The run directory and the summary written to ``summary.json``.
    """
    from mednas.errors import MednasError

    session = _SearchSession(
        task,
        run_dir,
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
        timeout=timeout,
        device=device,
        workers=workers,
        gpus=gpus,
        trials_per_gpu=trials_per_gpu,
        worker=worker,
        storage_timeout=storage_timeout,
        threads=threads,
    )
    try:
        session.open(show_progress=show_progress)
        return session.run()
    except MednasError as exc:
        session.ended_by = exc
        session.abandon_if_refused()
        raise
    except BaseException as exc:  # Ctrl-C, SIGTERM (see _exit_on_sigterm), a bug: recorded below, then raised
        session.ended_by = exc
        raise
    finally:
        session.close()


class _SearchSession:
    """One ``mednas search`` session of one process: checks, data, the trial loop, workers, and how it ended.

    Creating it checks the run directory, the configuration and the storage and claims the run directory; nothing
    is written before those checks pass, so a refused start leaves no trace (no run directory if there was none).
    """

    def __init__(
        self,
        task: TaskConfig,
        run_dir: str | os.PathLike[str],
        *,
        storage: str | None,
        study_name: str | None,
        n_trials: int | None,
        timeout: float | None,
        device: str | None,
        workers: int,
        gpus: list[int] | None,
        trials_per_gpu: int,
        worker: bool,
        storage_timeout: float | None,
        threads: int | None,
    ) -> None:
        from mednas._threads import configure_threads
        from mednas.study._workers import plan_slots
        from mednas.train import select_device

        self.task, self.worker, self.threads, self.storage_timeout = task, worker, threads, storage_timeout
        self.rd = rd = RunDir(run_dir)
        self.url = storage or rd.default_storage()
        self.name = study_name or task.name
        # First of all, so that a bad storage is reported at once.
        check_run_dir(rd)
        self.chash = check_config(task, rd)
        self.shared_storage = make_storage(storage, timeout=storage_timeout) if storage else None
        if storage_timeout is not None:
            os.environ["MEDNAS_STORAGE_TIMEOUT"] = str(storage_timeout)  # the --workers children open it too
        self.n_target = n_trials or task.search.n_trials
        self.timeout = timeout if timeout is not None else task.search.timeout
        # Threads before torch starts work: the usable CPUs shared by every local worker (workers inherit the choice).
        n_local = 1 if worker else (len(gpus) * trials_per_gpu if gpus else workers)
        self.tplan = configure_threads(
            threads, task_threads=task.training.threads, workers=n_local, announce=not worker
        )
        self.slots = (
            plan_slots(workers, gpus, trials_per_gpu, device or task.device, threads=self.tplan.threads)
            if not worker
            else []
        )
        if len(self.slots) > 1:
            device = self.slots[0].device
            os.environ.update({k: v for k, v in self.slots[0].env.items() if k == "CUDA_VISIBLE_DEVICES"})
        self.dev = select_device(device or task.device)
        self.claim = claim_run_dir(rd, config_hash=self.chash)
        self.handler: logging.Handler | None = None
        self.bar: _Progress | None = None
        self.started = False
        self.prepared = False  # this process wrote resolved.yaml: it records how the session ends (summary.json `stopped`)
        self.ended_by: BaseException | None = None
        self.procs: list[Any] = []
        self.failures_in_row = 0
        self.undo_sigterm = _exit_on_sigterm() if not worker else (lambda: None)

    def open(self, *, show_progress: bool) -> None:
        """Record the session, open the study, plan the data, cache the proxy arrays and start the workers."""
        from mednas.study._workers import spawn_workers

        task, rd = self.task, self.rd
        if not self.worker:
            prepare_run(
                task,
                rd,
                self.dev,
                settings=_session_settings(self.n_target, self.timeout, self.dev, self.threads),
            )
            self.prepared = True
        else:
            rd.require(rd.resolved, step="a search worker")
        existing_salt = rd.salt.read_text().strip() if rd.salt.is_file() else ""
        salt_candidate = existing_salt or new_salt()
        self.study = study = open_study(
            task,
            self.url,
            self.name,
            config_hash=self.chash,
            salt=salt_candidate,
            storage=self.shared_storage,
            timeout=self.storage_timeout,
        )
        salt = read_or_create_salt(rd, shared=study.user_attrs.get("salt_shared") or salt_candidate)
        if existing_salt and salt != existing_salt:
            logger.info("using the shared study's salt")
        self.handler = _setup_file_logging(rd)
        recover_stale_trials(study)
        tplan = self.tplan
        logger.info(
            "search %s: %s, run dir %s, device %s, %d CPU thread(s)%s%s",
            task.name,
            task.objective.name,
            rd.root,
            self.dev,
            tplan.threads,
            f" ({tplan.source}{', lowered: machine busy' if tplan.reduced else ''})",
            f", {len(self.slots)} workers" if len(self.slots) > 1 else "",
        )
        self.bar = bar = _Progress(
            self.n_target, _count_finished(study), enabled=show_progress and not self.worker, study=study
        )
        self.plan = plan = plan_data(task, rd, salt=salt, progress=bar.stage)
        self.claim.prepared()  # fingerprint and splits exist: the next start on this run directory may go on
        bar.stage("proxy cache", 0, 0)
        fidelity = Fidelity.proxy(task, plan.proxy_shape)
        train, val = fidelity.load(
            plan,
            seed=task.search.seed,
            progress=lambda split, d, t: bar.stage(f"proxy cache ({split})", d, t),
        )
        logger.info(
            "proxy %s (full %s): %d train / %d val cases",
            list(plan.proxy_shape),
            list(plan.full_shape),
            len(train),
            len(val),
        )
        self.objective = _TrialObjective(task, plan, rd, train, val, self.dev, on_epoch=bar.epoch)
        if len(self.slots) > 1:
            # The plan and the proxy cache exist now: workers only read them.
            self.procs = spawn_workers(
                self.slots,
                task_file=rd.resolved,
                run_dir=rd.root,
                storage=self.url,
                study_name=self.name,
                n_trials=self.n_target,
                timeout=self.timeout,
            )

    def run(self) -> SearchResult:
        """Run trials until the study has its target, wait for the workers, re-evaluate, and write the summary."""
        from mednas.study._workers import stop_workers

        task, rd, study, bar = self.task, self.rd, self.study, self.bar
        assert bar is not None
        self.t_start = time.monotonic()
        self.started = True
        self._write_summary()
        if self.prepared:
            clear_stop(rd)  # the previous session's end; a refused start (above) leaves it in place
        _freeze_long_lived()  # the collection after every trial (gc_after_trial) then skips them
        stop = self._work()
        if self.procs:
            bar.stage("waiting for workers", 0, 0)
            codes = stop_workers(
                self.procs, wait=True, timeout=None if self.timeout is None else self.timeout + 600
            )
            bad = [self.slots[i + 1].index for i, c in enumerate(codes) if c != 0]
            if bad:
                logger.warning("worker(s) %s exited with an error; see %s", bad, rd.root / "workers")
            recover_stale_trials(study)
            stop = self._work()  # trials of workers that died are retried here
        recover_stale_trials(study)
        if not self.worker and task.search.reevaluate.top:
            # The coordinating process only, once the trials are done (its workers have exited by now).
            from mednas.study._reevaluate import reevaluate_top

            bar.stage("re-evaluating the best candidates", 0, 0)
            reevaluate_top(
                study, self.objective, top=task.search.reevaluate.top, seeds=task.search.reevaluate.seeds
            )
        bar.close()
        summary = self._write_summary()
        if self.prepared:
            logger.info("search stopped: %s (%s)", stop[0], stop[1] or f"{_count_finished(study)} finished")
            summary = record_stop(rd, *stop)
        return SearchResult(rd.root, summary)

    def _write_summary(self) -> dict[str, Any]:
        return write_summary(self.task, self.rd, self.study, plan=self.plan, target=self.n_target)

    def _after_trial(self, study: Any, frozen: Any) -> None:
        from optuna.trial import TrialState

        self.failures_in_row = self.failures_in_row + 1 if frozen.state == TrialState.FAIL else 0
        recover_stale_trials(study)
        _drop_weights_outside_top(study, self.rd, self.task.search.keep_weights)
        self._write_summary()
        assert self.bar is not None
        self.bar.trial_done(frozen)

    def _work(self) -> tuple[str, str | None]:
        """Run trials until the study has its target; return why it stopped (``summary.json`` ``stopped``).

        One trial per optimize() call: every worker checks the shared count before starting one, so the study ends
        at the target instead of each worker running its own quota. When the remaining trials are running
        elsewhere, wait: if their worker dies, its retry appears here and is picked up.
        """
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        study, timeout, bar = self.study, self.timeout, self.bar
        assert bar is not None
        while _count_finished(study) < self.n_target:
            left = None if timeout is None else timeout - (time.monotonic() - self.t_start)
            if left is not None and left <= 0:
                logger.info("timeout reached")
                return "timeout reached", f"{timeout:g} s"
            if _count_busy(study) < self.n_target or study.get_trials(
                deepcopy=False, states=(TrialState.WAITING,)
            ):
                study.optimize(
                    self.objective,
                    n_trials=1,
                    callbacks=[self._after_trial],
                    catch=(_TrialFailed,),
                    gc_after_trial=True,
                    show_progress_bar=False,
                )
                if self.failures_in_row >= self.task.search.max_failures:
                    logger.error(
                        "%d trials failed in a row; stopping (see trials/*/log.txt)", self.failures_in_row
                    )
                    return "failed", f"{self.failures_in_row} trials failed in a row"
                continue
            time.sleep(2.0)
            fail_stale_trials(study)
            recover_stale_trials(study)
            self._write_summary()
            bar.trial_done(None)
        return "n_trials reached", None

    def abandon_if_refused(self) -> None:
        """Refused before any trial ran (bad data, a study of another configuration): remove what this process
        created, and only if nobody else has joined the run meanwhile."""
        if self.claim.owner and not self.started:
            self._drop_logging()
            if self.bar is not None:
                self.bar.close()
            self.claim.abandon()

    def close(self) -> None:
        """Record how the session ended (unless it was refused before anything ran), release the run and workers."""
        from mednas.errors import MednasError
        from mednas.study._workers import stop_workers

        _thaw_long_lived()
        self.undo_sigterm()
        refused = (
            isinstance(self.ended_by, MednasError) and not self.started
        )  # nothing ran; the run may be gone
        if self.prepared and self.ended_by is not None and not refused:
            try:
                reason, detail = _stop_of(self.ended_by)
                (logger.warning if reason == "interrupted" else logger.error)(
                    "search stopped: %s (%s)", reason, detail
                )
                record_stop(self.rd, reason, detail)
            except Exception:  # noqa: BLE001 - never hide why the search ended behind a failed record
                logger.warning("could not record how the search ended in %s", self.rd.summary, exc_info=True)
        self.claim.close()
        if self.procs:
            stop_workers([p for p in self.procs if p.poll() is None], wait=False)
        if self.bar is not None:
            self.bar.close()
        self._drop_logging()

    def _drop_logging(self) -> None:
        if self.handler is not None:
            logging.getLogger("mednas").removeHandler(self.handler)
            self.handler.close()
            self.handler = None


class _Progress:
    """Live progress of a search: trial n of N, best so far, current trial's epoch, elapsed and remaining.

    On a terminal it is a tqdm bar on stderr (log lines print above it); every finished trial is also logged
    (``mednas.study``, INFO) with structured fields (``trial``, ``state``, ``value``, ``best``, ``finished``,
    ``total``, ``elapsed_s``, ``remaining_s``), so ``--log-json``, ``search.log`` and runs without a terminal
    see the same progress. The remaining time is the finished trials' pace in this session (trials finished by
    other workers included) times the trials still to go.
    """

    _FORMAT = (
        "{desc}: {n_fmt}/{total_fmt} trials |{bar}| "  # + best, elapsed, remaining (set on each refresh)
    )

    def __init__(self, total: int, done: int, *, enabled: bool, study: Any) -> None:
        self.enabled = enabled and os.environ.get("MEDNAS_NO_PROGRESS") != "1"
        self.bar: Any = None
        self.study = study
        self.total = total
        self.done = min(done, total)
        self._t0 = time.monotonic()
        self._t_ready = self._t0  # end of data preparation: the pace is measured from here
        self._trials_started: float | None = None
        self._done_at_start = self.done
        self._best = ""
        self._last = 0.0
        self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=self.done,
                desc="search",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                bar_format=self._FORMAT,
                mininterval=0.5 if sys.stderr.isatty() else 5.0,
            )
            self._redirect_console_logging()
        self._update_best()
        self._set_postfix()

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

    def _redirect_console_logging(self) -> None:
        """Route the console handlers of the ``mednas`` logger through ``tqdm.write`` so lines print above the bar."""
        bar_cls = type(self.bar)

        class _AboveBar(logging.StreamHandler):  # type: ignore[type-arg]
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    bar_cls.write(self.format(record), file=self.stream)
                    self.flush()
                except Exception:  # noqa: BLE001 - logging must never break the search
                    self.handleError(record)

        root = logging.getLogger("mednas")
        for h in list(root.handlers):
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
                new = _AboveBar(h.stream)
                new.setFormatter(h.formatter)
                new.setLevel(h.level)
                for f in h.filters:
                    new.addFilter(f)
                root.handlers[root.handlers.index(h)] = new
                self._swapped.append((h, new))

    def _restore_console_logging(self) -> None:
        root = logging.getLogger("mednas")
        for old, new in self._swapped:
            if new in root.handlers:
                root.handlers[root.handlers.index(new)] = old
        self._swapped = []

    def _update_best(self) -> None:
        from mednas.study._summary import best_trials

        try:
            best = best_trials(self.study, 1)
        except Exception:  # noqa: BLE001 - a storage hiccup must not stop the search; the next trial retries
            return
        if best:
            extra = (
                f", Pareto front {len(pareto_front(self.study))}" if len(self.study.directions) > 1 else ""
            )
            self._best_trial: Any = best[0]
            self._best = f"best {best[0].values[0]:.4f} (trial {best[0].number}){extra}"

    def _set_postfix(self) -> None:
        if self.bar is None:
            return
        remaining = self.remaining()
        parts = [
            p
            for p in (
                self._best,
                f"{self.duration(self.elapsed())} elapsed",
                f"~{self.duration(remaining)} left"
                if remaining is not None and self.done < self.total
                else "",
            )
            if p
        ]
        # In the format itself, not tqdm's postfix (which tqdm prefixes with ", ").
        self.bar.bar_format = self._FORMAT + ", ".join(parts).replace("{", "{{").replace("}", "}}")

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is not None and (force or now - self._last >= self.bar.mininterval):
            self._last = now
            self._set_postfix()
            self.bar.refresh()

    # -- events

    def stage(self, name: str, done: int, total: int) -> None:
        """Show a preparation stage (validation, fingerprint, proxy cache)."""
        self._t_ready = time.monotonic()
        if self.bar is not None:
            self.bar.set_description_str(
                f"search [{name} {done}/{total}]" if total else f"search [{name}]", refresh=False
            )
            self._maybe_refresh()

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
        if self.bar is not None:
            self.bar.set_description_str(f"search [trial {trial} epoch {epoch}/{epochs}]", refresh=False)
            self._maybe_refresh()

    def trial_done(self, frozen: Any) -> None:
        """Count finished trials (the study's: other workers finish trials too) and log the one that ended here."""
        if frozen is None and self.bar is None:
            return  # a waiting worker's poll, with nothing to show: spare the storage the queries
        self._mark_trials_started()
        import contextlib

        with contextlib.suppress(Exception):  # a storage hiccup: keep the previous count
            self.done = min(self.total, _count_finished(self.study))
        self._update_best()
        if self.bar is not None:
            self.bar.n = self.done
        if frozen is not None:
            self._log_trial(frozen)
        self._maybe_refresh(force=frozen is not None)

    def _log_trial(self, frozen: Any) -> None:
        from optuna.trial import TrialState

        attrs = frozen.user_attrs
        value = float(frozen.values[0]) if frozen.values else None
        if frozen.state == TrialState.COMPLETE:
            state = (
                "complete" if attrs.get("feasible", True) is not False else "complete (violates a constraint)"
            )
            values = ", ".join(f"{v:.4f}" for v in frozen.values or [])
            what = f"objective {values}" + (
                f", {attrs['params']:,} parameters" if attrs.get("params") else ""
            )
            if "duplicate_of" in attrs:
                what += f" (same candidate as trial {attrs['duplicate_of']})"
            elif attrs.get("learned") is False:
                what += "; flagged: never started learning" + (
                    f" ({attrs['not_learning']})" if attrs.get("not_learning") else ""
                )
        elif frozen.state == TrialState.PRUNED and "infeasible" in attrs:
            state, what = "infeasible", str(attrs["infeasible"])
        elif frozen.state == TrialState.PRUNED:
            history = frozen.intermediate_values or attrs.get("primary_history") or {}
            epochs = len(history)
            last = history[max(history, key=int)] if history else None
            state = "pruned"
            what = f"at epoch {epochs}" + (
                f" (objective {last:.4f})" if isinstance(last, (int, float)) else ""
            )
            if attrs.get("learned") is False:
                what += f": not learning ({attrs.get('not_learning')})"
            value = float(last) if isinstance(last, (int, float)) else None
        elif frozen.state == TrialState.FAIL:
            state, what = "failed", str(attrs.get("fail_reason") or "see its log.txt")
        else:
            state, what = frozen.state.name.lower(), ""
        remaining = self.remaining()
        best = getattr(self, "_best_trial", None)
        fields = {
            "event": "trial",
            "trial": frozen.number,
            "state": state.split(" ")[0],
            "family": attrs.get("family"),
            "value": value,
            "values": list(frozen.values) if frozen.values and state.startswith("complete") else None,
            "best": float(best.values[0]) if best is not None else None,
            "best_trial": best.number if best is not None else None,
            "finished": self.done,
            "total": self.total,
            "elapsed_s": round(self.elapsed(), 1),
            "remaining_s": round(remaining, 1) if remaining is not None else None,
        }
        tail = f"{self.done}/{self.total} finished, {self.duration(self.elapsed())} elapsed" + (
            f", ~{self.duration(remaining)} left" if remaining is not None and self.done < self.total else ""
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
        self._restore_console_logging()
        if self.bar is not None:
            self._set_postfix()
            self.bar.set_description_str("search", refresh=False)
            self.bar.close()
            self.bar = None

    @staticmethod
    def duration(seconds: float | None) -> str:
        """Format seconds as ``42s``, ``3m05s`` or ``2h04m``."""
        if seconds is None or not math.isfinite(seconds):
            return "?"
        s = int(round(max(0.0, seconds)))
        if s < 60:
            return f"{s}s"
        if s < 3600:
            return f"{s // 60}m{s % 60:02d}s"
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
