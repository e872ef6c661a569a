"""Optuna study from config: storage (embedded SQLite by default, PostgreSQL/MySQL/journal by URL), seeded
sampler, pruner, heartbeats so that crashed workers' trials are failed and retried.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig
from mednas.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["make_pruner", "make_sampler", "make_storage", "open_study"]

HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60
MAX_RETRY = 2


def make_storage(url: str) -> Any:
    """Return an Optuna storage for ``url``.

    ``sqlite:///…``, ``postgresql://…`` and ``mysql://…`` give an RDB storage with heartbeats (a worker that dies
    has its running trial failed after the grace period and retried up to twice); ``journal:///path`` or a
    path ending in ``.log``/``.journal`` gives Optuna's journal-file storage for shared file systems.
    """
    import optuna

    _quiet_optuna()
    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        path = url[len("journal://") :] if url.startswith("journal://") else url
        path = path[1:] if path.startswith("//") else path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            path, lock_obj=optuna.storages.journal.JournalFileOpenLock(path)
        )
        return optuna.storages.JournalStorage(backend)
    if not url.startswith(("sqlite://", "postgresql", "mysql")):
        raise ConfigError(f"--storage {url!r}: expected sqlite:///FILE, postgresql://..., mysql://... or journal:///FILE")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    except ImportError as exc:
        raise ConfigError(f"--storage {url.split(':', 1)[0]}: a database driver is missing ({exc}); for PostgreSQL: pip install 'mednas[postgres]'") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; the user needs one line
        raise ConfigError(f"--storage: cannot open {_redact(url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _quiet_optuna() -> None:
    # Heartbeats, grouped TPE and the retry callback are marked experimental; they are what mednas relies on,
    # so the warning would only alarm users.
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _redact(url: str) -> str:
    # Never print a database password.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


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

    _quiet_optuna()
    seed = derive_seed(task.search.seed, n_existing, 0x5A)
    constraints = _constraints_func if task.objective.constraints else None
    if task.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if task.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=task.search.population_size, constraints_func=constraints)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=8,
        multivariate=True,
        group=True,  # families have disjoint parameters: TPE models each group separately
        constant_liar=True,  # several workers don't all sample the same point
        constraints_func=constraints,
    )


def make_pruner(task: TaskConfig) -> Any:
    """The configured pruner over per-epoch validation objectives."""
    import optuna

    cfg = task.search.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=task.proxy.epochs, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs)


def open_study(task: TaskConfig, storage_url: str, study_name: str, *, config_hash: str, salt: str) -> Any:
    """Create the study or load it, refusing a study made from a different configuration."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url)
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
        n_existing = len(existing.trials)
    except KeyError:
        existing, n_existing = None, 0
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=make_sampler(task, n_existing),
        pruner=make_pruner(task),
        directions=task.objective.directions,
        load_if_exists=True,
    )
    attrs = study.user_attrs
    if "config_hash" not in attrs:
        study.set_user_attr("config_hash", config_hash)
        study.set_user_attr("task", task.name)
        study.set_user_attr("salt_shared", salt)
        study.set_user_attr("mednas_pid_host", f"{os.getpid()}")
    elif attrs["config_hash"] != config_hash:
        raise ConfigError(
            f"study {study_name!r} in {_redact(storage_url)} was created from a different task configuration "
            f"(hash {attrs['config_hash']}, now {config_hash}); use another --study-name or --run-dir"
        )
    return study
