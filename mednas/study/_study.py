"""Optuna study from config: storage (embedded SQLite by default, PostgreSQL/MySQL/journal by URL), seeded
sampler, pruner, heartbeats so that crashed workers' trials are failed and retried.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from mednas.config import TaskConfig
from mednas.errors import ConfigError
from mednas.io._scrub import redact_url
from mednas.rundir._storage import (
    is_creation_race,
    make_storage,
    quiet_optuna,
    retry_creation_races,
    storage_engine_kwargs,
    storage_error,
)

logger = logging.getLogger(__name__)

__all__ = [
    "deferred_promotion",
    "is_creation_race",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "retry_creation_races",
    "storage_engine_kwargs",
]


def _constraints_func(frozen: Any) -> list[float]:
    # Set by the trial runner; trials without it (pruned, failed) count as feasible to Optuna's samplers.
    return list(frozen.user_attrs.get("constraints", []))


def make_sampler(task: TaskConfig, n_existing: int) -> Any:
    """Seeded sampler. The seed also depends on how many trials exist, so a resumed study draws new points.

    With constraints, Optuna's ``constraints_func`` support steers TPE and NSGA-II away from infeasible regions.
    TPE with several directions is Optuna's multi-objective TPE.
    """
    import optuna

    from mednas.train import derive_seed

    quiet_optuna()
    seed = derive_seed(task.search.seed, n_existing, 0x5A)
    constraints = _constraints_func if task.objective.constraints else None
    if task.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if task.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=task.search.population_size, constraints_func=constraints
        )
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=8,
        multivariate=True,
        group=True,  # families have disjoint parameters: TPE models each group separately
        constant_liar=True,  # several workers don't all sample the same point
        constraints_func=constraints,
    )


def deferred_promotion(task: TaskConfig) -> bool:
    """Whether the ladder pauses and later promotes trials (``search.ladder.promotion: deferred``, which applies to
    successive halving on one objective; Hyperband and several objectives decide at once)."""
    ladder = task.search.ladder
    return (
        task.search.fidelity == "ladder"
        and ladder.promotion == "deferred"
        and ladder.brackets == "successive_halving"
        and not task.objective.multi_objective
    )


def make_pruner(task: TaskConfig) -> Any:
    """The configured pruner over per-epoch validation objectives, or the ladder's over its rungs.

    A ladder trial reports only at rung ends, rung ``k`` at step ``eta**k``, so Optuna's successive halving
    (``min_resource=1``) and Hyperband (``max_resource=eta**(rungs - 1)``) compare trials exactly at the rungs.
    Several objectives: the pruner is never asked (mednas's rule in :mod:`mednas.study._pruning` decides); nor
    with deferred promotion (:mod:`mednas.study._promotion` decides, pausing trials Optuna's pruners cannot).
    """
    import optuna

    if task.search.fidelity == "ladder":
        ladder = task.search.ladder
        if deferred_promotion(task):
            return optuna.pruners.NopPruner()
        if ladder.brackets == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=_ladder_max_step(task), reduction_factor=ladder.eta
            )
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=ladder.eta, min_early_stopping_rate=0
        )
    cfg = task.search.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=task.proxy.epochs, reduction_factor=3
        )
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs)


def _ladder_max_step(task: TaskConfig) -> int | str:
    """The top rung's step, ``eta**(rungs - 1)``; ``"auto"`` (Optuna reads it off the first completed trial) when
    the default ladder's rungs depend on a full shape the task leaves to the data fingerprint."""
    from mednas.study._ladder import ladder_rungs

    ladder = task.search.ladder
    if ladder.rungs:
        n_rungs = len(ladder.rungs)
    elif task.training.shape:
        n_rungs = len(ladder_rungs(task, task.training.shape))
    else:
        return "auto"
    return int(ladder.eta ** max(1, n_rungs - 1))


def open_study(
    task: TaskConfig,
    storage_url: str,
    study_name: str,
    *,
    config_hash: str,
    salt: str,
    storage: Any = None,
    timeout: float | None = None,
) -> Any:
    """Create the study or load it, refusing a study made from a different configuration.

    ``storage`` is an already opened storage for ``storage_url`` (else it is opened here). Processes creating the
    same study at the same moment all end up in the one study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        storage = make_storage(storage_url, timeout=timeout)

    def create() -> tuple[Any, bool]:
        from optuna.exceptions import DuplicatedStudyError

        kwargs = {"storage": storage, "study_name": study_name, "pruner": make_pruner(task)}
        try:
            existing = optuna.load_study(**kwargs, sampler=make_sampler(task, 0))
            return optuna.load_study(**kwargs, sampler=make_sampler(task, len(existing.trials))), False
        except KeyError:
            pass
        try:
            return optuna.create_study(
                **kwargs, sampler=make_sampler(task, 0), directions=task.objective.directions
            ), True
        except DuplicatedStudyError:  # another process created it a moment ago
            return optuna.load_study(**kwargs, sampler=make_sampler(task, 0)), False

    try:
        study, created = retry_creation_races(create, what=f"study {study_name!r}")
        if tuple(d.name.lower() for d in study.directions) != tuple(task.objective.directions):
            raise ConfigError(
                f"study {study_name!r} in {redact_url(storage_url)} has directions "
                f"{[d.name.lower() for d in study.directions]}, the task {list(task.objective.directions)}; "
                "use another --study-name"
            )
        attrs = study.user_attrs
        if "salt_shared" not in attrs and not created and not study.trials:
            # Its creator sets the attributes right after creating it (the salt last): wait for them, so that every
            # worker uses the creator's salt (if the creator died in between, this process takes its place).
            deadline = time.monotonic() + 15.0
            while "salt_shared" not in attrs and time.monotonic() < deadline:
                time.sleep(0.2)
                attrs = storage.get_study_user_attrs(study._study_id)
        if "config_hash" not in attrs:
            study.set_user_attr("config_hash", config_hash)
            study.set_user_attr("task", task.name)
            study.set_user_attr("mednas_pid_host", f"{os.getpid()}")
            study.set_user_attr("salt_shared", salt)  # last: the others wait for it
            attrs = study.user_attrs
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage failure after opening: one line, not a traceback
        raise ConfigError(
            storage_error(storage_url, exc, storage_engine_kwargs(storage_url, timeout))
        ) from None
    if attrs.get("config_hash") != config_hash:
        raise ConfigError(
            f"study {study_name!r} in {redact_url(storage_url)} was created from a different task configuration "
            f"(hash {attrs.get('config_hash')}, now {config_hash}); use another --study-name or --run-dir"
        )
    return study
