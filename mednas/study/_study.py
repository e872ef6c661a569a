"""Optuna study from config: storage (embedded SQLite by default, PostgreSQL/MySQL/journal by URL), seeded
sampler, pruner, heartbeats so that crashed workers' trials are failed and retried.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig
from mednas.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "is_creation_race",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "retry_creation_races",
    "storage_engine_kwargs",
]

HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60
MAX_RETRY = 2


#: Seconds to wait for a PostgreSQL/MySQL server to connect and answer (``--storage-timeout`` or
#: ``$MEDNAS_STORAGE_TIMEOUT`` change it; a URL's own ``connect_timeout=`` wins).
DEFAULT_STORAGE_TIMEOUT = 10.0
#: Attempts at Optuna's schema and study creation when other processes create them at the same moment.
CREATE_ATTEMPTS = 6


def make_storage(url: str, *, timeout: float | None = None) -> Any:
    """Return an Optuna storage for ``url``, opened and checked (the tables exist afterwards).

    ``sqlite:///…``, ``postgresql://…`` and ``mysql://…`` give an RDB storage with heartbeats (a worker that dies
    has its running trial failed after the grace period and retried up to twice); ``journal:///path`` or a
    path ending in ``.log``/``.journal`` gives Optuna's journal-file storage for shared file systems.

    A database server is given ``timeout`` seconds (default :data:`DEFAULT_STORAGE_TIMEOUT`) to connect and
    answer, the whole start-up included; processes creating the schema of a fresh database at the same moment
    (the documented way to scale out) are retried with a short jittered backoff instead of failing.

    Raises:
        ConfigError: One line naming the storage (password masked): bad URL, missing driver, unreachable server.
    """
    import optuna

    _quiet_optuna()
    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        return _journal_storage(url)
    if not url.startswith(("sqlite://", "postgresql", "mysql")):
        raise ConfigError(
            f"--storage {_redact(url)!r}: expected sqlite:///FILE, postgresql://..., mysql://... or journal:///FILE"
        )
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--storage-timeout must be a positive number of seconds, got {timeout}")
    engine_kwargs = storage_engine_kwargs(url, timeout)

    def create() -> Any:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY
            ),
        )

    try:
        return retry_creation_races(create, what=f"the tables of {_redact(url)}")
    except ImportError as exc:
        raise ConfigError(
            f"--storage {url.split(':', 1)[0]}: a database driver is missing ({exc}); for PostgreSQL: pip install 'mednas[postgres]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; the user needs one line
        raise ConfigError(_storage_error(url, exc, engine_kwargs)) from None


def storage_engine_kwargs(url: str, timeout: float | None = None) -> dict[str, Any]:
    """SQLAlchemy engine arguments that bound every wait on the storage ``url``.

    PostgreSQL (libpq's ``connect_timeout`` covers the whole start-up, so a server that accepts the connection
    and never answers is bounded too) and MySQL get a connect timeout and a pool timeout; SQLite waits up to
    120 s for a lock held by another worker.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 120}}
    seconds = float(timeout) if timeout is not None else _env_timeout()
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": seconds}
    if "connect_timeout=" not in url:  # the URL's own setting wins
        # libpq takes whole seconds, at least 2; MySQL drivers take seconds too.
        kwargs["connect_args"] = {"connect_timeout": max(2, math.ceil(seconds))}
    return kwargs


def _env_timeout() -> float:
    raw = os.environ.get("MEDNAS_STORAGE_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_STORAGE_TIMEOUT
    except ValueError:
        raise ConfigError(f"MEDNAS_STORAGE_TIMEOUT={raw!r}: expected seconds, e.g. 10") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"MEDNAS_STORAGE_TIMEOUT={raw!r}: expected a positive number of seconds")
    return value


def retry_creation_races(create: Callable[[], Any], *, what: str, attempts: int = CREATE_ATTEMPTS) -> Any:
    """Call ``create``; when it loses a race with another process creating the same thing (tables, the alembic
    version row, a study, a locked SQLite file), wait a short jittered moment and try again."""
    import random

    for attempt in range(attempts):
        try:
            return create()
        except Exception as exc:  # noqa: BLE001 - the race shows as several SQLAlchemy/Optuna types
            if attempt == attempts - 1 or not is_creation_race(exc):
                raise
            delay = min(2.0, 0.1 * 2**attempt) * (0.5 + random.random())
            logger.debug(
                "another process is creating %s (%s); retrying in %.2f s", what, type(exc).__name__, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def is_creation_race(exc: BaseException) -> bool:
    """Whether ``exc`` is another process creating the same schema or study at the same moment."""
    from optuna.exceptions import DuplicatedStudyError

    if isinstance(exc, DuplicatedStudyError):
        return True
    text = f"{type(exc).__name__} {exc} {type(exc.__cause__).__name__ if exc.__cause__ else ''}".lower()
    return any(
        s in text
        for s in (
            "uniqueviolation",
            "integrityerror",
            "already exists",
            "duplicate key",
            "database is locked",
            "duplicatetable",
            "duplicate entry",
            "deadlock detected",
            "1050",
            "1062",
        )
    )


def _journal_storage(url: str) -> Any:
    import optuna

    path = url[len("journal://") :] if url.startswith("journal://") else url
    path = path[1:] if path.startswith("//") else path
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            path, lock_obj=optuna.storages.journal.JournalFileOpenLock(path)
        )
        return optuna.storages.JournalStorage(backend)
    except OSError as exc:
        raise ConfigError(f"--storage {url}: cannot open the journal file ({exc.strerror or exc})") from None


def _storage_error(url: str, exc: BaseException, engine_kwargs: dict[str, Any]) -> str:
    """One line for a storage that cannot be opened: which host, and why (a timeout says how long it waited)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
    host = _host(url)
    if "timeout" in f"{cause} {first}".lower():
        seconds = (engine_kwargs.get("connect_args") or {}).get("connect_timeout")
        waited = f" within {seconds} s" if seconds else ""
        return (
            f"--storage {_redact(url)}: the database server at {host} did not answer{waited} "
            "(is it running and reachable? --storage-timeout sets the limit)"
        )
    return f"--storage: cannot open {_redact(url)}{f' (server {host})' if host else ''}: {cause}: {_redact_text(first, url)}"


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")
    except ValueError:
        return ""


def _redact_text(text: str, url: str) -> str:
    from urllib.parse import unquote, urlsplit

    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***").replace(unquote(password), "***")
    return text


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
        if "/" not in creds:
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


def make_pruner(task: TaskConfig) -> Any:
    """The configured pruner over per-epoch validation objectives."""
    import optuna

    cfg = task.search.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=task.proxy.epochs, reduction_factor=3
        )
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs)


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
                f"study {study_name!r} in {_redact(storage_url)} has directions "
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
            _storage_error(storage_url, exc, storage_engine_kwargs(storage_url, timeout))
        ) from None
    if attrs.get("config_hash") != config_hash:
        raise ConfigError(
            f"study {study_name!r} in {_redact(storage_url)} was created from a different task configuration "
            f"(hash {attrs.get('config_hash')}, now {config_hash}); use another --study-name or --run-dir"
        )
    return study
