"""Log mednas's records to MLflow through its client API, or, when the store cannot be used, not at all.

Every call goes through :class:`mlflow.MlflowClient` with explicit run ids, never MLflow's global "active run",
so the trials of several workers (and a user's own MLflow use in the same process) never tangle. Tracking is a
side channel: the store is checked once when it is opened (``mednas: MLflow tracking off: <uri>: <reason>`` when it
cannot be used, then nothing is tried again), a failure later is the same one-line warning once and ends tracking
for the session, and no exception reaches a trial. mednas's own calls to a server are bounded (no retries for the
first check, two after it, short timeouts), whatever ``MLFLOW_HTTP_REQUEST_*`` says for the rest of the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mednas._versions import package_version
from mednas.errors import ConfigError
from mednas.rundir import RunDir, TrialRecord
from mednas.tracking._payload import RunPayload, export_payload, retrain_payloads, trial_payload
from mednas.tracking._uri import is_http, normalize_uri, parse_uri, public_uri, redact_reason

logger = logging.getLogger("mednas.tracking")

__all__ = [
    "INSTALL_HINT",
    "WORKER_ENV",
    "Tracker",
    "open_run_tracker",
    "open_tracker",
    "require_mlflow",
    "session_tags",
    "session_uri",
]

INSTALL_HINT = 'pip install "mednas[tracking]"'
#: How a parent ``mednas search`` hands its workers the tracking URI (credentials included, never on a command
#: line); empty: the parent found the store unusable, so its workers do not try again.
WORKER_ENV = "MEDNAS_MLFLOW_URI"
#: Seconds a tracking server gets to answer the first check (no retries), and each later call (two retries).
CHECK_TIMEOUT_S = 5
LOG_TIMEOUT_S = 10
_ENV_LOCK = threading.RLock()


def require_mlflow(uri: str) -> Any:
    """Import and return :mod:`mlflow`.

    Raises:
        ConfigError: MLflow is not installed (naming the install command).
    """
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            f"MLflow tracking ({public_uri(uri)}) needs the mlflow package: {INSTALL_HINT}"
        ) from None
    return mlflow


def session_uri(configured: str | None, *, worker: bool) -> str | None:
    """The URI a search process tracks to: the task's, or for a worker its parent's (``$MEDNAS_MLFLOW_URI``)."""
    if worker and WORKER_ENV in os.environ:
        return os.environ[WORKER_ENV] or None
    return configured


def session_tags(
    run_dir: str | os.PathLike[str], task: str, study: str, config_hash: str | None
) -> dict[str, str]:
    """Tags on every run of a session: mednas version, task, study, config hash and the run directory's name."""
    tags = {
        "mednas.version": package_version("mednas") or "unknown",
        "mednas.task": task,
        "mednas.study": study,
        "mednas.run_dir": Path(run_dir).name,
    }
    if config_hash:
        tags["mednas.config_hash"] = config_hash
    return tags


class Tracker:
    """Where one session's runs go: an MLflow experiment, or nowhere (every method then does nothing).

    Made by :func:`open_tracker`; ``Tracker()`` is one that tracks nothing.
    """

    def __init__(self, uri: str | None = None, *, tags: Mapping[str, str] | None = None) -> None:
        self.requested = bool(uri)
        self.uri = normalize_uri(uri) if uri else ""
        self.shown = public_uri(uri) if uri else ""
        self.tags = dict(tags or {})
        self.experiment_id: str | None = None
        self._client: Any = None

    @property
    def enabled(self) -> bool:
        """Whether runs are being logged."""
        return self._client is not None

    def worker_env(self) -> dict[str, str]:
        """What a worker process this session starts needs in its environment to track to the same store."""
        return {WORKER_ENV: self.uri if self.enabled else ""} if self.requested else {}

    def log_trial(self, record: TrialRecord | None, trial: Any) -> None:
        """Log a finished search trial (its record, else what Optuna knows) as run ``trial-<n>``."""
        self._log(lambda: [trial_payload(record, trial, self.tags)])

    def log_retrained(
        self, candidates: Iterable[Mapping[str, Any]], ensemble: Mapping[str, Any] | None = None
    ) -> None:
        """Log each retrained candidate as run ``retrain-<n>`` (and a fold ensemble as ``retrain-ensemble``)."""
        self._log(lambda: retrain_payloads(candidates, ensemble, self.tags))

    def log_export(self, info: Mapping[str, Any], bundle: str | os.PathLike[str]) -> None:
        """Log an export as run ``export`` with the bundle folder as its artifact ``bundle/``."""
        self._log(lambda: [export_payload(info, str(bundle), self.tags)])

    # -- internals

    def connect(self, mlflow: Any, experiment: str) -> None:
        """Open the store and the experiment (created when missing); on any failure, warn once and stay off."""
        try:
            with self._mlflow_env(timeout=CHECK_TIMEOUT_S, retries=0):
                client = mlflow.MlflowClient(tracking_uri=parse_uri(self.uri).uri)
                self.experiment_id = _experiment_id(client, experiment)
        except Exception as exc:  # noqa: BLE001 - tracking never stops the work it records
            self.off(exc, timeout=CHECK_TIMEOUT_S)
            return
        self._client = client
        logger.info("tracking in MLflow: %s, experiment %r", self.shown, experiment)

    def off(self, reason: BaseException | str, *, timeout: int = LOG_TIMEOUT_S) -> None:
        """Stop tracking for the session, with the one-line warning."""
        self._client = None
        text = _reason(reason, timeout) if isinstance(reason, BaseException) else str(reason)
        logger.warning("mednas: MLflow tracking off: %s: %s", self.shown, redact_reason(text, self.uri))

    def _log(self, make: Callable[[], list[RunPayload]]) -> None:
        if not self.enabled:
            return
        try:
            payloads = make()
            with self._mlflow_env(timeout=LOG_TIMEOUT_S, retries=2):
                for payload in payloads:
                    self._write(payload)
        except Exception as exc:  # noqa: BLE001 - tracking never stops the work it records
            self.off(exc)

    def _write(self, p: RunPayload) -> None:
        from mlflow.entities import Metric, Param

        client = self._client
        run = client.create_run(self.experiment_id, start_time=p.start_ms, tags=p.tags, run_name=p.name)
        run_id = run.info.run_id
        stamp = p.end_ms or int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(key, value, stamp, step) for key, value, step in p.metrics],
            params=[Param(key, value) for key, value in p.params.items()],
        )
        for local, artifact_path in p.artifacts:
            client.log_artifacts(run_id, local, artifact_path)
        client.set_terminated(run_id, status=p.status, end_time=p.end_ms)

    @contextlib.contextmanager
    def _mlflow_env(self, *, timeout: int, retries: int) -> Iterator[None]:
        """Set, for mednas's own calls only, the credentials taken from the URI, short HTTP timeouts and retries, the
        opt-in MLflow asks for before it writes a local ``file:`` store, and no "View run at" lines on stdout."""
        parsed = parse_uri(self.uri)
        values = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # stdout is the mednas command's own
        if is_http(parsed.uri):
            values.update(
                MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(retries),
                MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1" if retries else "0",
                MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0",
                MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout),
            )
        if parsed.username:
            values["MLFLOW_TRACKING_USERNAME"] = parsed.username
        if parsed.password:
            values["MLFLOW_TRACKING_PASSWORD"] = parsed.password
        if parsed.uri.startswith("file:"):
            values["MLFLOW_ALLOW_FILE_STORE"] = "true"
        with _ENV_LOCK:
            old = {key: os.environ.get(key) for key in values}
            os.environ.update(values)
            try:
                yield
            finally:
                for key, value in old.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


def open_tracker(
    uri: str | None, experiment: str, *, tags: Mapping[str, str] | None = None, required: bool = True
) -> Tracker:
    """Open MLflow tracking to ``uri`` (nothing when it is None) in ``experiment``, checking the store once.

    Args:
        uri: Tracking URI (``file:./mlruns``, ``sqlite:///mlflow.db``, ``http(s)://[user:secret@]host:port``).
        experiment: Experiment name (created when missing).
        tags: Tags every run gets.
        required: Whether tracking was asked for here (``--mlflow``, ``tracking.mlflow`` of a search): then a
            missing mlflow package is an error; otherwise (a URI recorded in the run) a warning.

    Returns:
        A :class:`Tracker`; off, after a one-line warning, when the store cannot be used.

    Raises:
        ConfigError: ``required`` and mlflow is not installed.

    Example:
        >>> open_tracker(None, "demo").enabled
        False
    """
    tracker = Tracker(uri, tags=tags)
    if not uri:
        return tracker
    try:
        mlflow = require_mlflow(uri)
    except ConfigError:
        if required:
            raise
        tracker.off(f"the mlflow package is not installed ({INSTALL_HINT})")
        return tracker
    tracker.connect(mlflow, experiment)
    return tracker


def open_run_tracker(
    run_dir: str | os.PathLike[str], uri: str | None = None, *, study_name: str | None = None
) -> Tracker:
    """Open tracking for a step after the search (retrain, export): ``uri`` if given, else the one the run recorded.

    The experiment is the run's ``tracking.experiment``, else its study's name. A run that was not tracked, and
    no ``uri``, gives a tracker that does nothing (and mlflow is not imported).

    Raises:
        ConfigError: ``uri`` is given and mlflow is not installed.
    """
    from mednas.errors import MednasError

    rd = RunDir(run_dir)
    try:
        task = rd.task() if rd.resolved_path.is_file() else None
        summary = rd.summary() if rd.summary_path.is_file() else {}
    except MednasError:  # the step itself says what is wrong with the run directory
        task, summary = None, {}
    target = uri or (task.tracking.mlflow if task is not None else None)
    if not target:
        return Tracker()
    study = study_name or (summary.get("study") or {}).get("name") or (task.name if task else rd.root.name)
    experiment = (task.tracking.experiment if task is not None else None) or study
    chash = (summary.get("study") or {}).get("config_hash")
    tags = session_tags(rd.root, task.name if task else rd.root.name, study, chash)
    return open_tracker(target, experiment, tags=tags, required=uri is not None)


def _experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``: found, restored from MLflow's trash, or created."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name))
        except Exception:
            found = client.get_experiment_by_name(name)  # another worker created it meanwhile
            if found is None:
                raise
    if getattr(found, "lifecycle_stage", "active") == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _reason(exc: BaseException, timeout: int) -> str:
    """A short reason: ``Connection refused``, ``no answer within 5 s``, else the exception's first words."""
    text = " ".join(str(exc).split())
    found = _ERRNO.search(text)
    if found:
        return found.group(1).strip()
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return f"no answer within {timeout} s"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
