"""The study storage a run keeps beside its records: opened one way by the search, retrain and status.

Optuna's RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats and retried creation races, or its journal file
for shared file systems. A password never appears in an error: URLs are shown as ``postgresql://user:***@host``
(:func:`mednas.io._scrub.redact_url`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mednas.errors import ConfigError
from mednas.io._scrub import redact_in_text, redact_url

logger = logging.getLogger(__name__)

__all__ = [
    "CREATE_ATTEMPTS",
    "DEFAULT_STORAGE_TIMEOUT",
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "MAX_RETRY",
    "is_creation_race",
    "make_storage",
    "quiet_optuna",
    "retry_creation_races",
    "storage_engine_kwargs",
    "storage_error",
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

    quiet_optuna()
    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        return _journal_storage(url)
    if not url.startswith(("sqlite://", "postgresql", "mysql")):
        raise ConfigError(
            f"--storage {redact_url(url)!r}: expected sqlite:///FILE, postgresql://..., mysql://... or journal:///FILE"
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
        return retry_creation_races(create, what=f"the tables of {redact_url(url)}")
    except ImportError as exc:
        raise ConfigError(
            f"--storage {url.split(':', 1)[0]}: a database driver is missing ({exc}); for PostgreSQL: pip install 'mednas[postgres]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; the user needs one line
        raise ConfigError(storage_error(url, exc, engine_kwargs)) from None


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


def storage_error(url: str, exc: BaseException, engine_kwargs: dict[str, Any]) -> str:
    """One line for a storage that cannot be opened: which host, and why (a timeout says how long it waited)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
    host = _host(url)
    if "timeout" in f"{cause} {first}".lower():
        seconds = (engine_kwargs.get("connect_args") or {}).get("connect_timeout")
        waited = f" within {seconds} s" if seconds else ""
        return (
            f"--storage {redact_url(url)}: the database server at {host} did not answer{waited} "
            "(is it running and reachable? --storage-timeout sets the limit)"
        )
    return f"--storage: cannot open {redact_url(url)}{f' (server {host})' if host else ''}: {cause}: {redact_in_text(first, url)}"


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")
    except ValueError:
        return ""


def quiet_optuna() -> None:
    # Heartbeats, grouped TPE and the retry callback are marked experimental; they are what mednas relies on,
    # so the warning would only alarm users.
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
