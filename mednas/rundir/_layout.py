"""The run directory's layout: one place that knows where each record lives.

Every step (search, retrain, export, report) reads and writes one run directory; paths stored inside it are
relative to it. Writes are atomic (see :mod:`mednas.io._atomic`). A run directory is owned: mednas marks the
ones it creates (``.mednas-run``) and never writes into a folder that is not one (see :func:`claim_run_dir`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednas.errors import DataError, RunDirError
from mednas.io._atomic import read_json, write_json, write_text
from mednas.rundir._records import TrialRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from mednas.config import TaskConfig

__all__ = [
    "MARKER",
    "RECORD",
    "RESOLVED",
    "SUMMARY",
    "RunClaim",
    "RunDir",
    "check_run_dir",
    "claim_run_dir",
    "environment_info",
]

logger = logging.getLogger(__name__)

#: The file that makes a folder a mednas run directory (JSON: ``mednas``, ``created``, ``config_hash``).
MARKER = ".mednas-run"
#: The resolved task (``mednas search`` writes it first; every later step reads it through :meth:`RunDir.task`).
RESOLVED = "resolved.yaml"
#: The run's summary (many writers, one at a time: :meth:`RunDir.update_summary`).
SUMMARY = "summary.json"
#: What the data plan decided for every case (normalisation, CT window, orientation); export ships it.
PREPROCESSING = "preprocessing.json"
#: A trial's or a retrained candidate's record, in ``trials/<n>/`` or ``retrain/<n>/``.
RECORD = "metrics.json"
#: The lock file that serialises the preparation of a run directory by concurrent starts.
LOCK = ".mednas-run.lock"
#: What ``mednas search`` writes before its first trial: a refused start may remove these, and only these.
PREPARATION_RECORDS = frozenset(
    {
        MARKER,
        LOCK,
        RESOLVED,
        "env.json",
        ".salt",
        "study.db",
        "study.db-journal",
        "study.db-wal",
        "study.db-shm",
        "search.log",
        "fingerprint.json",
        "splits.json",
        PREPROCESSING,
        "cache",  # derived data (demo data, augmented copies) when no cache folder is chosen: see default_cache_root
    }
)


@dataclass(frozen=True)
class RunDir:
    """Paths of a run directory.

    Example:
        >>> rd = RunDir("runs/demo")
        >>> rd.trial_dir(3).as_posix()
        'runs/demo/trials/3'
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # records
    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def resolved_path(self) -> Path:
        """``resolved.yaml``: read it with :meth:`task` or :meth:`resolved`, write it with :meth:`write_task`."""
        return self.root / RESOLVED

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def preprocessing(self) -> Path:
        """``preprocessing.json``: what the data plan decided (normalisation, CT window, orientation); export reads it."""
        return self.root / PREPROCESSING

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def summary_path(self) -> Path:
        """``summary.json``: read it with :meth:`summary`, change it with :meth:`update_summary`."""
        return self.root / SUMMARY

    @property
    def salt(self) -> Path:
        return self.root / ".salt"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def log(self) -> Path:
        return self.root / "search.log"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def retrain_dir(self, number: int) -> Path:
        return self.root / "retrain" / str(number)

    def default_storage(self) -> str:
        """SQLite storage inside the run directory (Optuna's RDB storage)."""
        return f"sqlite:///{self.study_db.resolve()}"

    def is_run(self) -> bool:
        """Whether the folder is a mednas run: it has the marker, or is a run of an earlier mednas version."""
        return self.marker.is_file() or self.is_legacy_run()

    def is_legacy_run(self) -> bool:
        """A run written before run directories were marked: ``resolved.yaml`` and an ``env.json`` with a
        ``config_hash`` (what every ``mednas search`` wrote first). An arbitrary folder never qualifies."""
        if self.marker.exists() or not self.resolved_path.is_file() or not self.env.is_file():
            return False
        try:
            env = json.loads(self.env.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(env, dict) and "config_hash" in env and "versions" in env

    def require(self, *paths: Path, step: str = "this step") -> None:
        """Raise :class:`RunDirError` if the folder is not a mednas run directory, or naming the first missing record.

        A folder without the ``.mednas-run`` marker is accepted only when it holds ``resolved.yaml`` (a run of an
        earlier mednas version), so no step reads or writes into a folder that is not a mednas run.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"{self.root}: is a file, not a run directory")
        if not self.root.is_dir():
            raise RunDirError(f"{self.root}: not a run directory (run `mednas search` first)")
        if not self.marker.is_file() and not self.resolved_path.is_file():
            raise RunDirError(
                f"{self.root}: not a mednas run directory (no {MARKER} marker and no resolved.yaml)"
            )
        for p in paths:
            if not p.exists():
                raise RunDirError(f"{self.root}: {p.relative_to(self.root)} is missing; {step} needs it")

    # -- the records: the only code that opens resolved.yaml, summary.json and */metrics.json

    def task(self) -> TaskConfig:
        """The resolved task the search ran with (``resolved.yaml``), validated; parsed once per :class:`RunDir`.

        Raises:
            RunDirError: If the file is missing or is not a valid task (naming the file).
        """
        cached = self.__dict__.get("_task")
        if cached is not None:
            return cached
        from mednas.config import load_task
        from mednas.errors import ConfigError

        data = self.resolved()
        if not data:
            raise RunDirError(f"{self.resolved_path}: missing or empty; run `mednas search` first")
        objective = data.get("objective")
        latency = objective.get("latency", {}) if isinstance(objective, dict) else None
        if isinstance(latency, dict) and "runtime" not in latency:
            # A run made before objective.latency.runtime existed timed its candidates in eager torch on the trial's
            # device: resumed, retrained or reported, it keeps doing so (its config hash stays the same, see
            # mednas.config._load._ADDED_KEYS), never the newer default, ONNX Runtime.
            data = {**data, "objective": {**objective, "latency": {**latency, "runtime": "torch"}}}
        try:
            task = load_task(data)
        except ConfigError as exc:
            raise RunDirError(
                f"{self.resolved_path}: not a valid resolved task ({str(exc).splitlines()[0]})"
            ) from None
        object.__setattr__(self, "_task", task)
        return task

    def resolved(self) -> dict[str, Any]:
        """``resolved.yaml`` as the plain mapping it holds (for display); ``{}`` when it is missing.

        Raises:
            RunDirError: If the file is not a YAML mapping.
        """
        from mednas.config import load_yaml
        from mednas.errors import ConfigError

        if not self.resolved_path.is_file():
            return {}
        try:
            return load_yaml(self.resolved_path)
        except ConfigError as exc:
            raise RunDirError(str(exc)) from None

    def write_task(self, task: TaskConfig) -> Path:
        """Write ``resolved.yaml`` (atomically) and forget the cached task."""
        from mednas.config import task_to_dict
        from mednas.io._atomic import write_yaml

        self.__dict__.pop("_task", None)
        return write_yaml(self.resolved_path, task_to_dict(task))

    def trial(self, number: int) -> TrialRecord | None:
        """Trial ``number``'s record, or None when it has none yet (or it cannot be read: being written elsewhere)."""
        return _read_record(self.trial_dir(number) / RECORD, number)

    def trial_numbers(self) -> list[int]:
        """The numbers of the trial folders, ascending (a running trial has its folder before its record)."""
        return _numbered_dirs(self.root / "trials")

    def trials(self) -> dict[int, TrialRecord]:
        """Every trial record in the run directory, by trial number (unreadable ones left out)."""
        out: dict[int, TrialRecord] = {}
        for n in self.trial_numbers():
            rec = self.trial(n)
            if rec is not None:
                out[n] = rec
        return out

    def write_trial(self, record: TrialRecord) -> Path:
        """Write ``trials/<n>/metrics.json`` atomically (``schema_version`` stamped)."""
        return write_json(self.trial_dir(record.trial) / RECORD, record.to_json())

    def trial_record_path(self, number: int) -> Path:
        """Where trial ``number``'s record lives (for messages; read it with :meth:`trial`)."""
        return self.trial_dir(number) / RECORD

    def retrained(self, number: int, *, seed_dir: Path | None = None) -> dict[str, Any] | None:
        """The record of retrained candidate ``number`` (``retrain/<n>/metrics.json``, or that of one seed's folder
        ``seed_dir``), or None when there is none or it cannot be read."""
        path = (seed_dir if seed_dir is not None else self.retrain_dir(number)) / RECORD
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def retrains(self) -> dict[int, dict[str, Any]]:
        """Every retrained candidate's record, by trial number."""
        out: dict[int, dict[str, Any]] = {}
        for n in _numbered_dirs(self.root / "retrain"):
            rec = self.retrained(n)
            if rec is not None:
                out[n] = rec
        return out

    def write_retrained(self, number: int, record: dict[str, Any], *, seed_dir: Path | None = None) -> Path:
        """Write a retrained candidate's record atomically; ``schema_version`` is stamped on ``record`` too."""
        path = (seed_dir if seed_dir is not None else self.retrain_dir(number)) / RECORD
        stamped = {"schema_version": RETRAIN_RECORD_SCHEMA, **record}
        record.clear()
        record.update(stamped)  # the caller's record is what was written, version included
        return write_json(path, record)

    def retrained_path(self, number: int, *, seed_dir: Path | None = None) -> Path:
        """Where a retrained candidate's record lives (for messages and existence checks)."""
        return (seed_dir if seed_dir is not None else self.retrain_dir(number)) / RECORD

    def summary(self) -> dict[str, Any]:
        """``summary.json`` (a fresh copy); ``{}`` when no search has written it yet.

        Raises:
            RunDirError: If the file exists but is not a JSON object.
        """
        if not self.summary_path.exists():
            return {}
        data = self.read_json(self.summary_path)
        if not isinstance(data, dict):
            raise RunDirError(f"{self.summary_path}: not a JSON object")
        return data

    def update_summary(
        self, change: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None, **keys: Any
    ) -> dict[str, Any]:
        """Change ``summary.json``: the one writer, atomic, safe with several processes and machines.

        Under an exclusive lock (``summary.json.lock``), the summary on disk is read, ``change`` is called with it
        (it mutates the mapping or returns a new one), ``keys`` are set at the top level (a value of ``None``
        removes the key), and the result is written atomically. Another process's update is never lost between
        the read and the write.

        Returns:
            The summary as written.

        Example:
            >>> rd.update_summary(export={"path": "bundle"})  # doctest: +SKIP
        """
        with self._summary_lock():
            summary = self.summary() if self.summary_path.exists() else {}
            if change is not None:
                new = change(summary)
                summary = summary if new is None else new
            for key, value in keys.items():
                if value is None:
                    summary.pop(key, None)
                else:
                    summary[key] = value
            write_json(self.summary_path, summary)
        return summary

    def _summary_lock(self) -> contextlib.AbstractContextManager[None]:
        return self.lock(SUMMARY)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the run directory's exclusive lock ``<name>.lock`` (processes sharing the folder take turns): the
        summary's read-modify-write, and the ladder's rung decisions (:mod:`mednas.study._promotion`)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- the latency figures of candidates, shared by the run's processes

    @property
    def latency_cache(self) -> Path:
        """``cache/latency.json``: each candidate's latency figure, by spec and measurement setting."""
        return self.root / "cache" / "latency.json"

    def cached_latency(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The latency figure :meth:`cache_latency` stored under ``key``, or None (none yet, or unreadable).

        Args:
            key: What the figure depends on, e.g. ``{"spec_hash", "runtime", "precision", "threads", "batch",
                "shape", "device", "hardware"}``.
        """
        try:
            data = read_json(self.latency_cache)
        except (OSError, ValueError, DataError):
            return None
        entry = data.get(_cache_key(key)) if isinstance(data, dict) else None
        return dict(entry) if isinstance(entry, dict) else None

    def cache_latency(self, key: Mapping[str, Any], figure: Mapping[str, Any]) -> None:
        """Store ``figure`` under ``key`` (atomically, under the ``latency`` lock: several workers may write)."""
        with self.lock("latency"):
            try:
                data = read_json(self.latency_cache)
            except (OSError, ValueError, DataError):  # missing, or damaged: the figures are measured again
                data = {}
            if not isinstance(data, dict):
                data = {}
            data[_cache_key(key)] = dict(figure)
            write_json(self.latency_cache, data)

    # -- other JSON records (env.json, fingerprint.json, splits.json, spec.json, predictions.json)

    def read_json(self, path: Path) -> Any:
        try:
            return read_json(path)
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing") from None
        except ValueError as exc:
            raise RunDirError(f"{path}: not valid JSON ({exc})") from None

    def write_json(self, path: Path, obj: Any) -> Path:
        return write_json(path, obj)

    def write_text(self, path: Path, text: str) -> Path:
        return write_text(path, text)

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the run directory, POSIX style."""
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()


def check_run_dir(rd: RunDir) -> None:
    """Refuse, without writing anything, a ``--run-dir`` that mednas must not take: a file, or an existing
    non-empty folder that is not a mednas run directory (no marker, not a run of an earlier version)."""
    root = rd.root
    if root.is_symlink() and not root.exists():
        raise RunDirError(
            f"{root}: is a dangling symbolic link, not a run directory; choose another --run-dir"
        )
    if root.exists() and not root.is_dir():
        raise RunDirError(f"{root}: is a file, not a run directory; choose another --run-dir")
    if not root.is_dir() or rd.is_run():
        return
    try:
        # The lock and a marker being written: another start is creating the run right now.
        entries = [e for e in os.listdir(root) if not e.startswith(MARKER)]
    except OSError as exc:
        raise RunDirError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    if entries:
        raise RunDirError(
            f"{root}: exists and is not a mednas run directory (no {MARKER} marker; it holds "
            f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}); choose a new or empty --run-dir"
        )


class RunClaim:
    """One process's hold on a run directory (see :func:`claim_run_dir`).

    While it prepares the run, the process holds an exclusive lock on ``.mednas-run.lock``: concurrent starts on
    one directory prepare it one after the other and then join the same study. For its whole session it also
    holds a shared lock on the marker, which says "in use": a refused start may clean up only when it created the
    run and can take that lock exclusively (nobody else joined).
    """

    def __init__(
        self, rd: RunDir, *, owner: bool, lock_fd: int, marker_fd: int, made_dirs: list[Path], existed: bool
    ) -> None:
        self.rd = rd
        self.owner = owner  #: this process wrote the marker (it created the run)
        self.existed = existed  #: the folder existed before (an empty folder the user made, or a run)
        self._lock_fd: int | None = lock_fd
        self._marker_fd: int | None = marker_fd
        self._made_dirs = made_dirs  # folders this process created, deepest last

    def prepared(self) -> None:
        """End the preparation: let the next waiting start prepare (the run stays marked as in use)."""
        if self._lock_fd is not None:
            _close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Release every lock."""
        self.prepared()
        if self._marker_fd is not None:
            _close(self._marker_fd)
            self._marker_fd = None

    def abandon(self, *, wait: float = 60.0) -> bool:
        """Remove what this refused start created, if it created the run and nobody else joined it.

        Only the preparation records (:data:`PREPARATION_RECORDS`) are removed, and only when the folder holds
        nothing else; then the folder itself (if this process made it) and the parents it made, if empty.
        Returns whether anything was removed.
        """
        rd = self.rd
        if not self.owner:
            self.close()
            return False
        try:
            if self._lock_fd is None:
                self._lock_fd = _lock(
                    rd.root / LOCK,
                    fcntl_mode="exclusive",
                    deadline=time.monotonic() + wait,
                    what=f"{rd.root}: waiting for another mednas process to finish preparing it",
                )
            if self._marker_fd is not None:
                _close(self._marker_fd)
                self._marker_fd = None
            try:
                self._marker_fd = _lock(rd.marker, fcntl_mode="exclusive", deadline=0.0, what="")
            except (BlockingIOError, RunDirError, FileNotFoundError, _Vanished):
                logger.info("left %s in place: another mednas process has joined the run", rd.root)
                return False
            entries = set(os.listdir(rd.root))
            others = sorted(entries - PREPARATION_RECORDS)
            if others:
                logger.info(
                    "left %s in place: it holds %s, which this start did not write", rd.root, others[0]
                )
                return False
            for name in sorted(entries - {MARKER, LOCK}):
                path = rd.root / name
                if path.is_dir() and not path.is_symlink():
                    import shutil

                    shutil.rmtree(path, ignore_errors=True)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for name in (
                MARKER,
                LOCK,
            ):  # the lock last: a start waiting on it re-checks the folder afterwards
                with contextlib.suppress(FileNotFoundError):
                    (rd.root / name).unlink()
            for folder in reversed(self._made_dirs):
                try:
                    folder.rmdir()
                except OSError:
                    break
            return True
        except OSError as exc:
            logger.warning("could not clean up %s: %s", rd.root, exc)
            return False
        finally:
            self.close()

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def claim_run_dir(rd: RunDir, *, config_hash: str, wait: float = 600.0) -> RunClaim:
    """Create the run directory (writing its marker by exclusive create) or join it, holding the preparation lock.

    A folder that is not a mednas run is refused (:func:`check_run_dir`); a run of an earlier mednas version
    (no marker, but ``resolved.yaml`` and ``env.json``) is adopted: its marker is written, with a log line.
    Concurrent starts wait for each other's preparation (at most ``wait`` seconds) and then join.

    Raises:
        RunDirError: The path is a file, a folder that is not a run, or the wait ran out.
    """
    deadline = time.monotonic() + wait
    for _attempt in range(20):
        check_run_dir(rd)
        existed = rd.root.is_dir()
        made = [] if existed else _make_dirs(rd.root)
        try:
            lock_fd = _lock(
                rd.root / LOCK,
                fcntl_mode="exclusive",
                deadline=deadline,
                what=f"{rd.root}: another mednas process is preparing it",
            )
        except _Vanished:
            continue  # a refused start removed the folder while this one waited: start over
        try:
            owner = False
            if rd.marker.exists():
                pass
            elif rd.is_legacy_run():
                _write_marker(rd, config_hash, adopted=True)
                logger.info(
                    "adopting %s, a run directory of an earlier mednas version (no %s marker)",
                    rd.root,
                    MARKER,
                )
            elif all(
                e.startswith(MARKER) and e != MARKER for e in os.listdir(rd.root)
            ):  # the lock, a stale temp
                owner = _write_marker(rd, config_hash, adopted=False)
            else:
                check_run_dir(rd)  # something not ours appeared meanwhile: refuse with the usual line
                raise RunDirError(
                    f"{rd.root}: exists and is not a mednas run directory; choose a new or empty --run-dir"
                )
            try:
                marker_fd = _lock(rd.marker, fcntl_mode="shared", deadline=0.0, what="")
            except (BlockingIOError, _Vanished, FileNotFoundError):
                _close(
                    lock_fd
                )  # a refused start is removing the folder: wait until it is gone, then start over
                time.sleep(0.2)
                continue
        except BaseException:
            _close(lock_fd)
            raise
        return RunClaim(
            rd,
            owner=owner,
            lock_fd=lock_fd,
            marker_fd=marker_fd,
            made_dirs=made if owner else [],
            existed=existed,
        )
    raise RunDirError(
        f"{rd.root}: could not be claimed (it keeps being removed and re-created by other processes)"
    )


#: The version of ``retrain/<n>/metrics.json`` this mednas writes.
RETRAIN_RECORD_SCHEMA = 1


def _cache_key(key: Mapping[str, Any]) -> str:
    """One readable string for a cache key: ``name=value`` pairs in name order, ``|`` between them."""
    return "|".join(f"{k}={json.dumps(key[k], separators=(',', ':'))}" for k in sorted(key))


def _numbered_dirs(parent: Path) -> list[int]:
    """The numbers of ``parent``'s numbered sub-folders, ascending (``trials/0``, ``trials/1``, ...)."""
    if not parent.is_dir():
        return []
    return sorted(int(d.name) for d in parent.iterdir() if d.is_dir() and d.name.isdigit())


def _read_record(path: Path, number: int) -> TrialRecord | None:
    """A trial record, or None when it is missing, half-written by another worker, or not a record."""
    from pydantic import ValidationError

    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    try:
        return TrialRecord.from_json(data, number=number)
    except ValidationError as exc:
        logger.warning("%s: not a trial record (%s); left out", path, str(exc).splitlines()[0])
        return None


class _Vanished(Exception):
    """The lock file was removed while waiting for it."""


def _make_dirs(root: Path) -> list[Path]:
    """Create ``root`` and missing parents; return those this process created (shallowest first)."""
    missing: list[Path] = []
    p = root
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    made = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
            made.append(folder)
        except FileExistsError:
            if not folder.is_dir():
                raise RunDirError(f"{folder}: is a file, not a folder; choose another --run-dir") from None
        except OSError as exc:
            raise RunDirError(f"{folder}: cannot be created ({exc.strerror or exc})") from None
    return made


def _lock(path: Path, *, fcntl_mode: str, deadline: float, what: str) -> int:
    """Open ``path`` and take a flock on it, polling until ``deadline`` (monotonic; 0 = try once).

    Checks afterwards that the locked file is still the one at ``path`` (not removed and re-created meanwhile).
    """
    import fcntl

    op = fcntl.LOCK_EX if fcntl_mode == "exclusive" else fcntl.LOCK_SH
    flags = os.O_RDWR | os.O_CREAT if path.name == LOCK else os.O_RDONLY
    told = False
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            raise _Vanished() from None
        except OSError as exc:
            raise RunDirError(f"{path.parent}: cannot be written ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except OSError as exc:
            _close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if deadline <= 0:
                raise BlockingIOError(str(path)) from None
            if time.monotonic() > deadline:
                raise RunDirError(f"{what} (waited too long; is a process stuck?)") from None
            if not told and what:
                logger.info("%s; waiting", what)
                told = True
            time.sleep(0.1)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            _close(fd)
            raise _Vanished()
        return fd


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor releases its flock


def _write_marker(rd: RunDir, config_hash: str, *, adopted: bool) -> bool:
    """Write the marker atomically and exclusively (a temporary file hard-linked to the name); False if it exists."""
    from mednas._versions import package_version

    record = {
        "mednas": package_version("mednas"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash,
    }
    if adopted:
        record["adopted"] = True
    tmp = rd.root / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    try:
        os.link(tmp, rd.marker)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: str, seed: int) -> dict[str, Any]:
    """Versions, device, seed and git commit: what ``env.json`` records."""
    from mednas._versions import package_versions

    versions = package_versions(
        (
            "mednas",
            "torch",
            "monai",
            "optuna",
            "numpy",
            "pydantic",
            "nibabel",
            "pydicom",
            "scikit-image",
            "scikit-learn",
            "scipy",
        )
    )
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname_hash": __import__("hashlib").sha256(socket.gethostname().encode()).hexdigest()[:12],
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "device": device,
        "seed": seed,
        "git_commit": _git_commit(),
    }
    try:
        import torch

        from mednas._threads import current_threads

        info["torch_threads"] = torch.get_num_threads()
        info["threads"] = current_threads()  # intra-op, inter-op, OpenMP/MKL variables and why (ThreadPlan)
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - environment reporting must never fail a run
        pass
    return info
