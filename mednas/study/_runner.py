"""Run a search: check and claim the run directory, prepare the data, run trials until the study has its target.

One trial is :class:`mednas.study._trial.TrialObjective`; this module runs the session around it (records of the
session, workers, crash recovery, re-evaluation, ``summary.json``, how the session ended). Continuing a study
never repeats a completed trial.

What a trial knows lives in its record (``trials/<n>/metrics.json``, :class:`mednas.rundir.TrialRecord`). Optuna's
trial user attributes keep only what is read from the shared storage, by every worker and on every machine
(:data:`TRIAL_USER_ATTRS`):

- ``seed``: the trial's proxy seed; re-evaluation lists it first among the candidate's seeds.
- ``host``, ``pid``: crash recovery (and ``mednas status``) tell a trial whose local worker died.
- ``heartbeat``: crash recovery on storages without Optuna's heartbeats (the journal file).
- ``retry_of``, ``retry_count``: crash recovery: the original trial a retry repeats, and how often it was retried
  (retries are bounded).
- ``spec_hash``, ``duplicate_of``: twin detection: a sampled candidate equal to a completed one reuses its score;
  the ranking, re-evaluation and retrain leave duplicates out.
- ``constraints``: the constraint violations Optuna's ``constraints_func`` gives TPE and NSGA-II.
- ``feasible``, ``learned``: the ranking (:func:`mednas.rundir.best_trials`, :func:`~mednas.rundir.pareto_front`)
  and the counts of ``summary.json``.
- ``static_secondary``, ``primary_history``: the multi-objective pruner (:mod:`mednas.study._pruning`).
- ``rung_values``: every ladder trial's objective values at each rung it completed (``{str(k): [values...]}``),
  which the ladder's multi-objective rung rule (:func:`mednas.study._pruning.ladder_promotes`) compares.
- ``infeasible``: a trial rejected before training (pruned in Optuna's storage), counted apart from pruned ones.

Family, parameters, MACs, latency, operating threshold, why a trial did not learn or failed: its record only.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig, config_hash, task_to_dict, with_settings
from mednas.data import plan_data, read_or_create_salt
from mednas.data._cases import new_salt
from mednas.io._atomic import write_json
from mednas.rundir import RunDir, best_trials, check_run_dir, claim_run_dir, environment_info
from mednas.study._progress import SearchProgress, count_finished
from mednas.study._recovery import recover_stale_trials
from mednas.study._study import make_storage, open_study
from mednas.study._summary import clear_stop, record_stop, write_summary
from mednas.study._trial import TrialFailed, TrialObjective, check_latency_runtime, proxy_context
from mednas.tracking import Tracker, open_tracker, public_uri, require_mlflow, session_tags, session_uri
from mednas.train._candidate import Fidelity, suggest_imbalance

logger = logging.getLogger("mednas.study")

__all__ = [
    "TRIAL_USER_ATTRS",
    "SearchResult",
    "prepare_run",
    "proxy_context",
    "run_search",
    "suggest_imbalance",
]

#: Every user attribute a search sets on a trial (see the module's description for who reads each).
TRIAL_USER_ATTRS = frozenset(
    {
        "seed",
        "host",
        "pid",
        "heartbeat",
        "retry_of",
        "retry_count",
        "spec_hash",
        "duplicate_of",
        "constraints",
        "feasible",
        "learned",
        "static_secondary",
        "primary_history",
        "rung_values",
        "infeasible",
    }
)

#: The trial objective under the name benchmarks and tests patch (``mednas.study._runner._TrialObjective``).
_TrialObjective = TrialObjective


@dataclass
class SearchResult:
    """What :func:`run_search` returns: the run directory and its ``summary.json`` content."""

    run_dir: Path
    summary: dict[str, Any]


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


def _drop_weights_outside_top(study: Any, rd: RunDir, keep: int) -> None:
    """Delete proxy weights of trials that are no longer among the ``keep`` best (or on the Pareto front)."""
    keepers = {t.number for t in best_trials(study, keep)} if keep else set()
    for path in rd.root.glob("trials/*/model.pt"):
        try:
            number = int(path.parent.name)
        except ValueError:
            continue
        if number not in keepers:
            path.unlink(missing_ok=True)


def _drop_paused_weights(study: Any, rd: RunDir) -> None:
    """The session ends: delete the rung weights of ladder trials still paused (none will be promoted now)."""
    from optuna.trial import TrialState

    from mednas.study._ladder import LadderFiles
    from mednas.study._promotion import PAUSED

    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        if PAUSED in t.user_attrs:
            LadderFiles(rd, t.number).clear()


def _setup_file_logging(run_dir: RunDir) -> logging.Handler:
    handler = logging.FileHandler(run_dir.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("mednas")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


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
    run_dir.write_task(effective)
    write_json(run_dir.env, environment_info(device, task.search.seed) | {"config_hash": chash})
    return chash


def _session_settings(
    n_trials: int, timeout: float | None, device: str, threads: int | None, tracking: str | None = None
) -> dict[str, Any]:
    """The command-line choices ``resolved.yaml`` records over the task (all outside the run's identity)."""
    settings: dict[str, Any] = {"search.n_trials": n_trials, "search.timeout": timeout, "device": device}
    if tracking:
        # Recorded absolute for a local store, never with the credentials a server's URI may hold.
        settings["tracking.mlflow"] = public_uri(tracking)
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
    from mednas.errors import RunDirError

    chash = config_hash(task)
    if run_dir.resolved_path.exists():
        previous = _previous_task(run_dir)
        if config_hash(previous) != chash:
            old, new = task_to_dict(previous), task_to_dict(task)
            diffs = _diff_keys(old, new)
            raise RunDirError(
                f"{run_dir.root} holds a run of a different configuration (differs in {', '.join(diffs[:4]) or 'settings'}); "
                "use another --run-dir, or the same settings to continue"
            )
    return chash


def _previous_task(run_dir: RunDir) -> TaskConfig:
    """The task ``resolved.yaml`` holds now, read afresh: the check under the preparation lock must see what
    another start may have written since the first check (a :class:`RunDir` keeps the task it parsed once)."""
    from mednas.errors import RunDirError

    try:
        return RunDir(run_dir.root).task()
    except RunDirError as exc:
        first = str(exc).splitlines()[0]
        if ": not a valid resolved task (" not in first:
            first = f"{run_dir.resolved_path}: not a valid resolved task ({first})"
        raise RunDirError(f"{first}; use another --run-dir") from None


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
            ) or (prefix == "" and k in ("device", "tracking")):
                continue
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _count_busy(study: Any) -> int:
    """New candidates finished or running (continuations of paused ladder trials are not new candidates)."""
    from optuna.trial import TrialState

    from mednas.study._promotion import is_continuation

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(not is_continuation(t) for t in study.get_trials(deepcopy=False, states=states))


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
        check_latency_runtime(task, self.dev)
        self.tracking_uri = session_uri(task.tracking.mlflow, worker=worker)
        if self.tracking_uri:
            require_mlflow(self.tracking_uri)  # before anything is written
        self.tracker = Tracker()
        self.claim = claim_run_dir(rd, config_hash=self.chash)
        self.handler: logging.Handler | None = None
        self.bar: SearchProgress | None = None
        self.started = False
        self.prepared = False  # this process wrote resolved.yaml: it records how the session ends (summary.json `stopped`)
        self.ended_by: BaseException | None = None
        self.procs: list[Any] = []
        self.failures_in_row = 0
        self.undo_sigterm = _exit_on_sigterm() if not worker else (lambda: None)

    def open(self, *, show_progress: bool) -> None:
        """Record the session, open the study, plan the data, cache the proxy arrays and start the workers."""
        task, rd = self.task, self.rd
        if not self.worker:
            prepare_run(
                task,
                rd,
                self.dev,
                settings=_session_settings(
                    self.n_target, self.timeout, self.dev, self.threads, task.tracking.mlflow
                ),
            )
            self.prepared = True
        else:
            rd.require(rd.resolved_path, step="a search worker")
        salt = self._open_study()
        self.handler = _setup_file_logging(rd)
        recover_stale_trials(self.study, run_dir=rd)
        self._announce()
        self.tracker = open_tracker(
            self.tracking_uri,
            task.tracking.experiment or self.name,
            tags=session_tags(rd.root, task.name, self.name, self.chash),
        )
        self.bar = SearchProgress(
            self.n_target,
            count_finished(self.study),
            enabled=show_progress and not self.worker,
            study=self.study,
            run_dir=rd,
        )
        self._prepare_data(salt, self.bar)
        if len(self.slots) > 1:
            self._start_workers()

    def _open_study(self) -> str:
        """Open (or create) the study; return the salt of the run's case identifiers (the shared study's)."""
        rd = self.rd
        existing_salt = rd.salt.read_text().strip() if rd.salt.is_file() else ""
        salt_candidate = existing_salt or new_salt()
        self.study = open_study(
            self.task,
            self.url,
            self.name,
            config_hash=self.chash,
            salt=salt_candidate,
            storage=self.shared_storage,
            timeout=self.storage_timeout,
        )
        salt = read_or_create_salt(rd, shared=self.study.user_attrs.get("salt_shared") or salt_candidate)
        if existing_salt and salt != existing_salt:
            logger.info("using the shared study's salt")
        return salt

    def _announce(self) -> None:
        tplan = self.tplan
        logger.info(
            "search %s: %s, run dir %s, device %s, %d CPU thread(s)%s%s",
            self.task.name,
            self.task.objective.name,
            self.rd.root,
            self.dev,
            tplan.threads,
            f" ({tplan.source}{', lowered: machine busy' if tplan.reduced else ''})",
            f", {len(self.slots)} workers" if len(self.slots) > 1 else "",
        )

    def _prepare_data(self, salt: str, bar: SearchProgress) -> None:
        """Plan the data (fingerprint, splits), load the proxy arrays and build the trial objective."""
        task, rd = self.task, self.rd
        self.plan = plan = plan_data(task, rd, salt=salt, progress=bar.stage)
        self.claim.prepared()  # fingerprint and splits exist: the next start on this run directory may go on
        if task.search.fidelity == "ladder":
            self._prepare_ladder(bar)
            return
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

    def _prepare_ladder(self, bar: SearchProgress) -> None:
        """Load every rung's arrays (each rung shape cached once) and build the ladder's trial objective."""
        from mednas.study._ladder import ladder_rungs

        task, plan = self.task, self.plan
        rungs = ladder_rungs(task, plan.full_shape)
        data = []
        for k, rung in enumerate(rungs):
            bar.stage(f"rung {k} cache", 0, 0)
            fidelity = Fidelity.proxy(task, rung.shape, epochs=rung.epochs, subset=1.0)

            def tick(split: str, done: int, total: int, k: int = k) -> None:
                bar.stage(f"rung {k} cache ({split})", done, total)

            data.append(fidelity.load(plan, seed=task.search.seed, progress=tick))
        logger.info(
            "ladder rungs %s (eta %d, %s): %d train / %d val cases",
            " -> ".join(f"{'x'.join(map(str, r.shape))} x{r.epochs} epochs" for r in rungs),
            task.search.ladder.eta,
            task.search.ladder.brackets,
            len(data[-1][0]),
            len(data[-1][1]),
        )
        train, val = data[-1]
        self.objective = _TrialObjective(
            task, plan, self.rd, train, val, self.dev, on_epoch=bar.epoch, rung_data=data
        )

    def _start_workers(self) -> None:
        """Start the local worker processes; the plan and the proxy cache exist now, so they only read them."""
        from mednas.study._workers import spawn_workers

        self.procs = spawn_workers(
            self.slots,
            task_file=self.rd.resolved_path,
            run_dir=self.rd.root,
            storage=self.url,
            study_name=self.name,
            n_trials=self.n_target,
            timeout=self.timeout,
            env=self.tracker.worker_env(),
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
            recover_stale_trials(study, run_dir=self.rd)
            stop = self._work()  # trials of workers that died are retried here
        recover_stale_trials(study, run_dir=self.rd)
        if not self.worker:
            _drop_paused_weights(study, rd)
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
            logger.info("search stopped: %s (%s)", stop[0], stop[1] or f"{count_finished(study)} finished")
            summary = record_stop(rd, *stop)
        return SearchResult(rd.root, summary)

    def _write_summary(self) -> dict[str, Any]:
        return write_summary(self.task, self.rd, self.study, plan=self.plan, target=self.n_target)

    def _after_trial(self, study: Any, frozen: Any) -> None:
        from optuna.trial import TrialState

        self.failures_in_row = self.failures_in_row + 1 if frozen.state == TrialState.FAIL else 0
        recover_stale_trials(study, run_dir=self.rd)
        _drop_weights_outside_top(study, self.rd, self.task.search.keep_weights)
        self._write_summary()
        assert self.bar is not None
        self.bar.trial_done(frozen)
        if self.tracker.enabled:  # last: the record and the summary never wait for the tracking store
            self.tracker.log_trial(self.rd.trial(frozen.number), frozen)

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
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - self.t_start)
            if left is not None and left <= 0:
                logger.info("timeout reached")
                return "timeout reached", f"{timeout:g} s"
            # Deferred ladder promotion (mednas.study._promotion): once every candidate has finished, the paused
            # trials of each complete rung climb on; a worker waits while others still train a rung.
            done = count_finished(study) >= self.n_target
            promoted = done and self._promote()
            if done and not promoted and not self._rungs_pending(study):
                break
            if (
                promoted
                or _count_busy(study) < self.n_target
                or study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            ):
                study.optimize(
                    self.objective,
                    n_trials=1,
                    callbacks=[self._after_trial],
                    catch=(TrialFailed,),
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
            recover_stale_trials(study, run_dir=self.rd)
            self._write_summary()
            bar.trial_done(None)
        return "n_trials reached", None

    def _rungs_pending(self, study: Any) -> bool:
        """Deferred ladder promotion: trials still run or wait (their rungs may complete and promote others)."""
        from optuna.trial import TrialState

        from mednas.study._study import deferred_promotion

        if not deferred_promotion(self.task):
            return False
        return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))

    def _promote(self) -> bool:
        """Queue the continuation of a paused ladder trial that has become promotable; whether one was queued."""
        from mednas.study._study import deferred_promotion

        if not deferred_promotion(self.task):
            return False
        from mednas.study._promotion import LADDER_LOCK, enqueue_continuation, next_promotion

        rungs = self.objective.ladder_rungs or []
        with self.rd.lock(LADDER_LOCK):
            found = next_promotion(self.study, self.rd.trial_dir, self.task.search.ladder.eta, len(rungs))
            if found is None:
                return False
            paused, k = found
            enqueue_continuation(self.study, paused, k)
        logger.info("promoting trial %d: it climbs on from rung %d", paused.number, k + 1)
        return True

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
                logger.warning(
                    "could not record how the search ended in %s", self.rd.summary_path, exc_info=True
                )
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
