"""Retrain the search's best candidates at full fidelity, test them once, and measure the proxy's fidelity.

For each of the top-k trials (by proxy objective; from the Pareto front in a multi-objective study) the spec
is rebuilt for the full input shape and trained with early stopping on the validation objective; the operating
point is chosen on validation and the held-out test split is evaluated once, at that operating point, with
bootstrap intervals over patients. With ``seeds`` > 1 each candidate is trained once per seed (the first seed in
``retrain/<n>/``, the others in ``retrain/<n>/seed-<k>/``) and ranked by its seed mean; the agreement between
seeds is the ceiling any proxy ranking is read against. Each training keeps a per-epoch checkpoint, so a killed
retrain continues the training it was in and skips finished ones.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednas._progress import ProgressBar
from mednas.config import TaskConfig
from mednas.data import ArrayData, DataPlan
from mednas.errors import RunDirError
from mednas.retraining._fidelity import mean_std, proxy_fidelity
from mednas.rundir import RunDir, TrialRecord
from mednas.train import PATCH_OVERLAP, Fidelity, space_context, space_for, train_candidate

if TYPE_CHECKING:
    from mednas.train import TrainedCandidate

logger = logging.getLogger("mednas.retraining")

__all__ = ["RetrainResult", "run_retrain", "select_candidates"]


@dataclass
class RetrainResult:
    """What :func:`run_retrain` returns.

    Args:
        run_dir: The run directory.
        candidates: Each candidate's ``retrain/<n>/metrics.json`` record, in the proxy's order.
        fidelity: The ``proxy_fidelity`` record.
        summary: The updated ``summary.json``.
        folds: With ``--folds K``: K (each candidate's record then has ``folds``, ``val_mean``, ``val_sd`` and
            ``val_ci95``); None for a plain retrain.
        ensemble: With ``--folds``: the chosen candidate's fold ensemble (``retrain/ensemble.json``).
    """

    run_dir: Path
    candidates: list[dict[str, Any]]
    fidelity: dict[str, Any]
    summary: dict[str, Any]
    folds: int | None = None
    ensemble: dict[str, Any] | None = None


def select_candidates(study: Any, k: int) -> list[Any]:
    """Return the ``k`` trials to retrain, best proxy objective first.

    Single objective: the best complete trials (:func:`mednas.rundir.best_trials`: trials that violate a
    constraint are left out, candidates that never started learning come last). Several objectives: the Pareto
    front (:func:`mednas.rundir.pareto_front`), ordered by the first objective, at most ``k``. A trial that
    re-used the score of an identical candidate (``duplicate_of``: same architecture, loss and sampling) is
    skipped: that candidate is retrained once.
    """
    from optuna.trial import TrialState

    from mednas.rundir import best_trials, pareto_front

    if len(study.directions) > 1:
        ranked = pareto_front(study)
        if len(ranked) < k:
            logger.info(
                "the Pareto front has %d trials (fewer than --top-k %d): retraining all of them",
                len(ranked),
                k,
            )
    else:
        n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        ranked = best_trials(study, max(1, n_complete))
    chosen: list[Any] = []
    seen: set[tuple[Any, ...]] = set()
    for t in ranked:
        spec_hash = t.user_attrs.get("spec_hash")
        key = (spec_hash, t.params.get("loss"), t.params.get("sampling"))
        if "duplicate_of" in t.user_attrs or (spec_hash and key in seen):
            continue
        if spec_hash:
            seen.add(key)
        chosen.append(t)
        if len(chosen) == k:
            break
    return chosen


def _open_run_study(rd: RunDir, task: TaskConfig, storage: str | None, study_name: str | None) -> Any:
    import optuna

    from mednas.config import config_hash
    from mednas.rundir import make_storage

    if storage is None and not rd.study_db.exists():
        raise RunDirError(
            f"{rd.root}: study.db is missing; pass the --storage (and --study-name) the search used"
        )
    url = storage or rd.default_storage()
    name = study_name or (rd.summary().get("study") or {}).get("name") or task.name
    try:
        study = optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        raise RunDirError(
            f"{rd.root}: no study named {name!r} in its storage; pass the --storage/--study-name the search used"
        ) from None
    recorded = study.user_attrs.get("config_hash")
    if recorded and recorded != config_hash(task):
        raise RunDirError(
            f"{rd.root}: study {name!r} was created from a different configuration than resolved.yaml "
            f"(hash {recorded}, run {config_hash(task)}); pass the right --storage/--study-name"
        )
    return study


def _check_specs(rd: RunDir, candidates: list[Any]) -> None:
    """Refuse the retrain, before anything is written, when a candidate's recorded spec is not an allowed network."""
    from mednas.spec import load_spec

    for trial in candidates:
        path = rd.trial_dir(trial.number) / "spec.json"
        if path.exists():
            load_spec(rd.read_json(path), path, error=RunDirError)


def _load_spec(rd: RunDir, task: TaskConfig, plan: DataPlan, trial: Any) -> Any:
    """The trial's spec from ``trials/<n>/spec.json``, or re-sampled from its parameters (another machine's trial)."""
    from mednas.spec import load_spec

    path = rd.trial_dir(trial.number) / "spec.json"
    if path.exists():
        return load_spec(rd.read_json(path), path, error=RunDirError)
    from mednas.spaces import ReplayTrial

    family = trial.params.get("family")
    if not family:
        raise RunDirError(f"{rd.root}: trial {trial.number} has no spec.json and no recorded family")
    replay = ReplayTrial(trial.params)
    replay.suggest_categorical("family", [family])
    return space_for(task, family).sample(replay, space_context(task, plan.proxy_shape, plan.full_shape))


class _Log:
    """A candidate's ``log.txt`` (appended across sessions, rewritten atomically) mirrored to the logger."""

    def __init__(self, rd: RunDir, path: Path) -> None:
        self.rd, self.path = rd, path
        self.lines = path.read_text().splitlines() if path.exists() else []

    def __call__(self, msg: str, level: int = logging.INFO) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {msg}")
        self.rd.write_text(self.path, "\n".join(self.lines) + "\n")
        logger.log(level, "%s", msg)


def run_retrain(
    run_dir: str | os.PathLike[str],
    *,
    top_k: int = 3,
    epochs: int | None = None,
    patch: list[int] | tuple[int, ...] | None = None,
    device: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_resamples: int | None = None,
    seeds: int = 2,
    show_progress: bool = True,
    threads: int | None = None,
) -> RetrainResult:
    """Retrain the top-k candidates of a search at full fidelity, test them once, and record proxy fidelity.

    Args:
        run_dir: A run directory written by ``mednas search``.
        top_k: How many candidates to retrain.
        epochs: Maximum epochs (default: the task's ``training.epochs``).
        patch: Patch size for patch training with sliding-window validation (default: ``training.patch``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default: the task's).
        storage: Optuna storage URL the search used (default: ``study.db`` in the run directory).
        study_name: Study name (default: the one in ``summary.json``, else the task name).
        n_resamples: Bootstrap resamples (over patients) for the validation and test intervals (default: the
            task's ``objective.bootstrap.resamples``).
        seeds: Full-fidelity trainings per candidate, with different seeds (default 2): candidates are ranked
            by the seed mean and the agreement between seeds (``seed_ceiling_tau``) bounds what any proxy can
            reach. 1 halves the cost and leaves the ceiling unmeasured.
        show_progress: Progress bar on stderr (``MEDNAS_NO_PROGRESS=1`` also disables it).
        threads: CPU threads (default: the task's ``training.threads``, else the CPUs this process may use, fewer
            when the machine is busy at start).

    Returns:
        The candidates' records (the first seed's, with a ``seeds`` list and ``val_mean``/``val_sd``), the
        fidelity record and the updated summary.

    Raises:
        RunDirError: For a directory without a search, or a study with no completed trial.

    Example:
        >>> result = run_retrain("runs/demo-xray-nodule", top_k=3)  # doctest: +SKIP
        >>> result.fidelity["kendall_tau"]  # doctest: +SKIP
    """
    from mednas._threads import configure_threads
    from mednas.data import plan_data, read_or_create_salt
    from mednas.train import select_device

    _check_counts(top_k, seeds)
    rd = RunDir(run_dir)
    rd.require(rd.resolved_path, rd.splits, step="retrain")
    task = rd.task()
    configure_threads(threads, task_threads=task.training.threads)
    dev = select_device(device or task.device)
    study = _open_run_study(rd, task, storage, study_name)
    candidates = select_candidates(study, top_k)
    if not candidates:
        raise RunDirError(f"{rd.root}: no completed trial to retrain (run `mednas search` first)")
    _check_specs(rd, candidates)
    salt = read_or_create_salt(rd, shared=study.user_attrs.get("salt_shared"))
    bar = _Progress(len(candidates) * seeds, enabled=show_progress)
    try:
        plan = plan_data(task, rd, salt=salt, progress=bar.stage)
        full = Fidelity.full(task, plan.full_shape, epochs=epochs, patch=patch)
        _log_start(task, rd, full, len(candidates), seeds, dev, patch_given=patch is not None)
        records = _retrain_all(task, rd, plan, study, candidates, full, dev, bar, n_resamples, seeds)
    finally:
        bar.close()
    fidelity = _fidelity(task, study, candidates, records)
    if fidelity.get("warning"):
        logger.warning("%s", fidelity["warning"])
    summary = _update_summary(rd, task, full, candidates, records, fidelity, top_k)
    return RetrainResult(rd.root, records, fidelity, summary)


def _retrain_all(
    task: TaskConfig,
    rd: RunDir,
    plan: DataPlan,
    study: Any,
    candidates: list[Any],
    full: Fidelity,
    device: str,
    bar: _Progress,
    n_resamples: int | None,
    seeds: int,
) -> list[dict[str, Any]]:
    """Train every candidate once per seed; return each candidate's record with its seeds combined."""
    data = _Arrays(plan, full, bar)
    # Seed-major: every candidate's first seed before any second seed, so an interrupted retrain has already
    # ranked all candidates once.
    runs: list[list[dict[str, Any]]] = [[] for _ in candidates]
    for k in range(seeds):
        for i, trial in enumerate(candidates):
            bar.candidate(i, trial.number, k, seeds)
            runs[i].append(
                _retrain_one(task, rd, plan, study, trial, full, data, device, bar, n_resamples, k)
            )
    return [_combine_seeds(rd, task, r) for r in runs]


def _check_counts(top_k: int, seeds: int) -> None:
    if top_k < 1 or seeds < 1:
        from mednas.errors import ConfigError

        raise ConfigError(
            f"--top-k must be at least 1, got {top_k}"
            if top_k < 1
            else f"--seeds must be at least 1, got {seeds}"
        )


def _log_start(
    task: TaskConfig, rd: RunDir, full: Fidelity, n: int, seeds: int, device: str, *, patch_given: bool
) -> None:
    if task.training.patch and full.patch is None and not patch_given:
        logger.info("training.patch covers the whole input %s: training on whole inputs", list(full.shape))
    logger.info(
        "retrain %s: top %d of %s, %s, up to %d epochs (patience %d)%s, %d seed%s each, device %s",
        task.name,
        n,
        rd.root,
        "x".join(map(str, full.shape)),
        full.epochs,
        full.patience,
        f", patches {'x'.join(map(str, full.patch))}" if full.patch else "",
        seeds,
        "" if seeds == 1 else "s",
        device,
    )


class _Arrays:
    """Full-shape arrays, loaded once; the test split only when a finished candidate is evaluated."""

    def __init__(self, plan: DataPlan, full: Fidelity, bar: _Progress) -> None:
        self.plan, self.full, self.shape, self.bar = plan, full, full.shape, bar
        self._train: ArrayData | None = None
        self._val: ArrayData | None = None
        self._test: ArrayData | None = None

    def train_val(self) -> tuple[ArrayData, ArrayData]:
        if self._train is None or self._val is None:
            # Full fidelity keeps every training patient: the seed chooses no subset.
            self._train, self._val = self.full.load(
                self.plan, seed=0, progress=lambda split, d, t: self.bar.stage(f"full-size {split}", d, t)
            )
            logger.info(
                "full fidelity %s: %d train / %d val cases",
                list(self.shape),
                len(self._train),
                len(self._val),
            )
        return self._train, self._val

    def test(self) -> ArrayData:
        if self._test is None:
            # The only place mednas reads the held-out test split: after training, once per candidate's final model.
            self._test = self.plan.arrays("test", self.shape, allow_test=True)
        return self._test


def _same_budget(record: dict[str, Any], full: Fidelity, seed: int) -> bool:
    wanted = full.to_dict()
    return all(record.get(k) == v for k, v in wanted.items()) and record.get("seed") == seed


def seed_dir(rd: RunDir, number: int, k: int) -> Path:
    """Where seed ``k`` of candidate ``number`` is trained: ``retrain/<n>/`` for the first, ``seed-<k>/`` inside it after."""
    return rd.retrain_dir(number) if k == 0 else rd.retrain_dir(number) / f"seed-{k}"


def _seed(task: TaskConfig, number: int, k: int) -> int:
    from mednas.train import derive_seed

    # The first seed is the one retraining always used, so runs retrained before --seeds existed stay valid.
    return derive_seed(task.search.seed, number) if k == 0 else derive_seed(task.search.seed, number, k)


def _retrain_one(
    task: TaskConfig,
    rd: RunDir,
    plan: DataPlan,
    study: Any,
    trial: Any,
    full: Fidelity,
    data: _Arrays,
    device: str,
    bar: _Progress,
    n_resamples: int | None,
    k: int = 0,
) -> dict[str, Any]:
    """Train seed ``k`` of one candidate and test it once; a training finished at these settings is skipped.

    Returns:
        The record of ``retrain/<n>/metrics.json`` (``seed-<k>/metrics.json`` for a later seed): complete, or
        failed with its reason (a re-run retries a failed or interrupted training).
    """
    from mednas.train import TrainingDiverged

    n = trial.number
    cdir = seed_dir(rd, n, k)
    ckpt = cdir / "checkpoint.pt"
    seed = _seed(task, n, k)
    previous = rd.retrained(n, seed_dir=cdir)
    if previous is not None and previous.get("state") == "complete" and _same_budget(previous, full, seed):
        ckpt.unlink(missing_ok=True)
        return _skipped(task, previous, k, bar)
    cdir.mkdir(parents=True, exist_ok=True)
    log = _Log(rd, cdir / "log.txt")
    if previous is not None and not _same_budget(previous, full, seed):
        _forget_checkpoint(ckpt, log)
    spec = _load_spec(rd, task, plan, trial)
    adapted = space_for(task, spec.family).adapt_to_shape(spec, full.net_shape)
    rd.write_json(cdir / "spec.json", adapted.to_dict())
    record = _start_record(task, plan, trial, spec, full, seed, k, rd.trial(n))
    log(_start_text(trial, spec, full, record, k, resumed=ckpt.exists()))
    train, val = data.train_val()
    t0 = time.perf_counter()
    loaded = _from_ladder(task, rd, spec, full, val, device, record, k, log)
    if loaded is not None:
        rd.write_retrained(n, record, seed_dir=cdir)
        trained, extra = loaded
        result = _finish(task, rd, cdir, record, trained, full, data, device, seed, n_resamples, extra)
        log(_complete_text(task, result))
        bar.done(result["val"]["objective"], n)
        return result
    try:
        rd.write_retrained(n, record, seed_dir=cdir)
        trained = train_candidate(
            task,
            spec,
            train,
            val,
            full,
            seed=seed,
            device=device,
            loss=record["loss"],
            sampling=record["sampling"],
            checkpoint=ckpt,
            on_epoch=_epoch_reporter(task, full, log, bar),
        )
    except TrainingDiverged as exc:
        ckpt.unlink(missing_ok=True)  # resuming would diverge again: a re-run starts afresh
        return _failed(rd, record, cdir, f"diverged: {exc}", log, t0, bar)
    except Exception as exc:  # noqa: BLE001 - one broken candidate must not stop the others
        log(traceback.format_exc(), logging.DEBUG)
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        return _failed(rd, record, cdir, reason, log, t0, bar)
    result = _finish(task, rd, cdir, record, trained, full, data, device, seed, n_resamples)
    ckpt.unlink(missing_ok=True)
    log(_complete_text(task, result))
    bar.done(result["val"]["objective"], n)
    return result


@dataclass
class _TopRung:
    """A ladder trial's top-rung training: its weights (``trials/<n>/model.pt``) and the rung's record entry."""

    weights: Path
    entry: dict[str, Any]
    proxy: TrialRecord


def _top_rung(rd: RunDir, task: TaskConfig, n: int, full: Fidelity, k: int) -> _TopRung | None:
    """Seed ``k`` of trial ``n`` comes from the ladder when it is the first seed, the trial climbed to the top rung
    at the full shape and its weights are there (None: it is trained, as every seed of a flat run is)."""
    if k != 0 or task.search.fidelity != "ladder":
        return None
    proxy = rd.trial(n)
    n_rungs = len(((rd.summary() or {}).get("ladder") or {}).get("rungs") or [])
    if proxy is None or proxy.fidelity != "ladder" or not n_rungs or proxy.rung_reached != n_rungs - 1:
        return None
    rungs = proxy.to_json().get("rungs") or []
    weights = rd.trial_dir(n) / "model.pt"
    if not rungs or list(proxy.shape or []) != list(full.shape) or not weights.is_file():
        return None
    return _TopRung(weights, dict(rungs[-1]), proxy)


def _from_ladder(
    task: TaskConfig,
    rd: RunDir,
    spec: Any,
    full: Fidelity,
    val: ArrayData,
    device: str,
    record: dict[str, Any],
    k: int,
    log: _Log,
) -> tuple[TrainedCandidate, dict[str, Any]] | None:
    """Seed ``k``'s network from the ladder's top rung (see :func:`_top_rung`), or None: it is trained."""
    top = _top_rung(rd, task, int(record["trial"]), full, k)
    if top is None:
        return None
    try:
        return _load_top_rung(task, spec, full, val, device, record, top, log)
    except Exception as exc:  # noqa: BLE001 - weights that cannot be used are trained again, not trusted
        log(
            f"the ladder's top-rung weights cannot be used ({type(exc).__name__}: {exc}): trained",
            logging.WARNING,
        )
        return None


def _load_top_rung(
    task: TaskConfig,
    spec: Any,
    full: Fidelity,
    val: ArrayData,
    device: str,
    record: dict[str, Any],
    top: _TopRung,
    log: _Log,
) -> tuple[TrainedCandidate, dict[str, Any]] | None:
    """The top rung's network with its weights, scored on validation like a trained seed's best epoch, and the
    record fields that say where it came from; None when its weights do not fit the network (it is trained)."""
    from mednas.metrics._objective import evaluate_objective
    from mednas.spec import build
    from mednas.train import (
        FitResult,
        TrainedCandidate,
        candidate_settings,
        load_weights,
        predict,
        same_structure,
    )

    t0 = time.perf_counter()
    space = space_for(task, spec.family)
    adapted = space.adapt_to_shape(spec, full.net_shape)
    state = load_weights(top.weights)
    model = build(adapted)
    if not same_structure(state, model):
        log(f"{top.weights.name} of the ladder does not fit the network at {list(full.net_shape)}: trained")
        return None
    model.load_state_dict(state)
    model.to(device)
    settings = candidate_settings(
        task,
        full,
        seed=record["seed"],
        device=device,
        divisor=space.required_divisor(adapted),
        class_weights=None,
        loss=record["loss"],
        sampling=record["sampling"],
    )
    outputs = predict(
        model,
        val.images,
        problem=task.problem,
        batch_size=task.training.batch_size,
        device=device,
        divisor=settings.divisor,
        patch=full.patch,
        overlap=PATCH_OVERLAP,
    )
    value, metrics = evaluate_objective(task, outputs, val)
    value = float(value) if value is not None and math.isfinite(value) else -math.inf
    best_epoch = top.entry.get("best_epoch")
    result = FitResult(
        int(best_epoch or 0), value, metrics, [], 0.0, top.proxy.learned is not False, False, state, outputs
    )
    rung = top.entry.get("rung")
    log(
        f"seed 1 from the ladder: trial {record['trial']}'s top-rung weights ({list(full.shape)}, "
        f"{top.entry.get('epochs')} epochs), not trained again"
    )
    extra = {
        "from_ladder": True,
        "ladder_rung": rung,
        "epochs": int(top.entry.get("epochs") or 0),
        "best_epoch": best_epoch,
        "stopped_early": False,
        "history": [h for h in (top.proxy.history or []) if h.get("rung") == rung],
        "learned": top.proxy.learned is not False,
        "seconds": time.perf_counter() - t0,
        "trained_seed": top.proxy.seed,
    }
    return TrainedCandidate(result, model, adapted, settings), extra


def _skipped(task: TaskConfig, previous: dict[str, Any], k: int, bar: _Progress) -> dict[str, Any]:
    """Count a training that a previous session finished at the same settings, and return its record."""
    n, value = int(previous["trial"]), previous["val"]["objective"]
    logger.info(
        "trial %d%s: already retrained (val %s = %.4f); skipped",
        n,
        f" seed {k + 1}" if k else "",
        task.objective.name,
        value,
    )
    bar.done(value, n)
    return previous


def _forget_checkpoint(ckpt: Path, log: _Log) -> None:
    """Remove the checkpoint of a session that trained at other settings: the training starts afresh."""
    if ckpt.exists():
        log(
            "settings changed since the last session (shape, patch, epochs or patience): starting this candidate afresh"
        )
    ckpt.unlink(missing_ok=True)


def _start_record(
    task: TaskConfig,
    plan: DataPlan,
    trial: Any,
    spec: Any,
    full: Fidelity,
    seed: int,
    k: int,
    proxy: TrialRecord | None,
) -> dict[str, Any]:
    """The record of a training about to start (``state`` running): what is trained, how, and its proxy trial."""
    return {
        "trial": trial.number,
        "state": "running",
        "reason": None,
        "seed": seed,
        "seed_index": k,
        **full.to_dict(),
        "family": spec.family,
        "target": spec.target,
        "spec_hash": spec.hash,
        # The proxy trial's own record first: sampling is a conditional parameter (absent from the trial's params
        # when its weighted loss was the imbalance remedy), and `auto` was resolved for its sampling there.
        **_remedies(task, trial, proxy),
        "preprocessing": plan.prep.to_dict(),
        "proxy": {
            "value": float(trial.values[0]),
            "values": list(trial.values),
            "learned": trial.user_attrs.get("learned"),
            "seconds": proxy.seconds if proxy is not None else None,
            "shape": list(plan.proxy_shape),
            "epochs": task.proxy.epochs,
        },
    }


def _start_text(
    trial: Any, spec: Any, full: Fidelity, record: dict[str, Any], k: int, *, resumed: bool
) -> str:
    """The log line that opens a training (``retraining trial 3: ...`` or ``resuming trial 3 ...``)."""
    return (
        f"{'resuming' if resumed else 'retraining'} trial {trial.number}{f' (seed {k + 1})' if k else ''}: "
        f"{spec.class_name} {spec.hash} (family {spec.family}) at {'x'.join(map(str, full.shape))}, up to "
        f"{full.epochs} epochs, patience {full.patience}, loss {record['loss']}, sampling {record['sampling']}, "
        f"seed {record['seed']}"
    )


def _epoch_reporter(task: TaskConfig, full: Fidelity, log: _Log, bar: _Progress) -> Callable[[Any], None]:
    """What the trainer calls after each epoch: a line in ``log.txt`` and the progress bar's epoch."""

    def on_epoch(result: Any) -> None:
        log(
            f"epoch {result.epoch}/{full.epochs}: loss {result.train_loss:.4f}, {task.objective.name} "
            f"{result.value:.4f} ({result.seconds:.1f}s)"
        )
        bar.epoch(result.epoch, full.epochs, result.value)

    return on_epoch


def _complete_text(task: TaskConfig, result: dict[str, Any]) -> str:
    """The log line that closes a finished training: validation, test figure, time, a never-learned flag."""
    return (
        f"complete: validation {task.objective.name} {result['val']['objective']:.4f} (best epoch "
        f"{result['best_epoch']} of {result['epochs']}{', stopped early' if result['stopped_early'] else ''}), "
        f"{_test_text(task, result)}; {result['seconds']:.1f}s"
        + ("" if result["learned"] else "; flagged: never started learning")
    )


def _finish(
    task: TaskConfig,
    rd: RunDir,
    cdir: Path,
    record: dict[str, Any],
    trained: TrainedCandidate,
    full: Fidelity,
    data: _Arrays,
    device: str,
    seed: int,
    n_resamples: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the best weights, the validation report and the one test evaluation; return the record.

    ``extra`` overrides the training fields (a first seed taken from the ladder's top rung: see :func:`_top_rung`).
    """
    from mednas.metrics._objective import prediction_record
    from mednas.train._loop import save_weights

    fit_result = trained.result
    save_weights(cdir / "model.pt", fit_result.best_state)
    _, val = data.train_val()
    t_report = time.perf_counter()
    val_outputs, val_report, calibration = _validation_report(
        task, fit_result.best_outputs, val, seed, n_resamples
    )
    report_seconds = time.perf_counter() - t_report
    op = val_report.get("operating_point")
    # Classification: the validation threshold, unchanged, even when it is +inf (no validation case could be called
    # positive within the specificity floor); choosing a threshold on test would flatter the test figures.
    threshold = float(op["threshold"]) if op and op.get("threshold") is not None else None
    predictions = {"val": prediction_record(task, val_outputs, val, split="val")}
    test_record, test_predictions = _test_once(
        task, trained, full, data, device, seed, n_resamples, threshold, calibration
    )
    if test_predictions is not None:
        predictions["test"] = test_predictions
    # Per-case predictions of the model export ships (salted case keys only): the report's curves and confusion
    # matrix come from them, not from the proxy trial.
    rd.write_json(cdir / "predictions.json", predictions)
    value = float(fit_result.best_value) if math.isfinite(fit_result.best_value) else 0.0
    record.update(
        state="complete",
        divisor=list(trained.divisor),
        params=int(sum(p.numel() for p in trained.model.parameters())),
        val={"objective": value, "metrics": val_report["metrics"], "per_class": val_report.get("per_class")},
        operating_point=op,
        test=test_record,
        **_training_fields(fit_result, report_seconds),
        weights="model.pt",
        predictions="predictions.json",
    )
    if extra:
        record.update(extra, seconds=float(extra.get("seconds", 0.0)) + report_seconds)
    if calibration is not None:
        record.update(
            calibration=calibration,
            temperature=calibration["temperature"],
            ece_before=calibration["ece_before"],
            ece_after=calibration["ece_after"],
        )
    rd.write_retrained(int(record["trial"]), record, seed_dir=cdir)
    return record


def _validation_report(
    task: TaskConfig, outputs: Any, val: ArrayData, seed: int, n_resamples: int | None
) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """The validation outputs (calibrated for classification), their report and the calibration record."""
    from mednas.metrics import calibration_record, operating_point_warnings
    from mednas.metrics._objective import objective_report

    calibration = None
    if task.problem == "classification":
        # Temperature scaling on validation, before the operating point: the threshold export ships is one on
        # the calibrated probabilities that predict(), load() and evaluate give.
        calibration, outputs = calibration_record(outputs, val.labels, task.labels.finding_indices)
    report = objective_report(task, outputs, val, seed=seed, n_resamples=n_resamples)
    if calibration is not None:
        truth = np.isin(val.labels, task.labels.finding_indices).astype(int)
        calibration["warnings"] = operating_point_warnings(
            report.get("operating_point"),
            ece_after=calibration["ece_after"],
            truth=truth,
            temperature=calibration["temperature"],
            ece_before=calibration["ece_before"],
        )
    return outputs, report, calibration


def _test_once(
    task: TaskConfig,
    trained: TrainedCandidate,
    full: Fidelity,
    data: _Arrays,
    device: str,
    seed: int,
    n_resamples: int | None,
    threshold: float | None,
    calibration: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The one evaluation of the held-out test split, at the validation threshold: its record and predictions.

    A task without a test split (an external site holds it, say) is evaluated on nothing: the record says so, and
    every later step shows that instead of a figure (validate with ``mednas evaluate`` on the held-back data).
    """
    from mednas.metrics import apply_temperature, logits_from_probabilities
    from mednas.metrics._objective import objective_report, prediction_record
    from mednas.train import predict

    test = data.test()
    if not len(test):
        return {
            "metrics": {},
            "operating_point": None,
            "per_class": None,
            "n_cases": 0,
            "threshold_from": None,
            "skipped": "the task has no test split",
        }, None
    outputs = predict(
        trained.model,
        test.images,
        problem=task.problem,
        batch_size=task.training.batch_size,
        device=device,
        divisor=trained.divisor,
        patch=full.patch,
        overlap=PATCH_OVERLAP,
    )
    if calibration is not None:
        outputs = apply_temperature(logits_from_probabilities(outputs), calibration["temperature"])
    report = objective_report(task, outputs, test, seed=seed, n_resamples=n_resamples, threshold=threshold)
    record = {
        "metrics": report["metrics"],
        "operating_point": report.get("operating_point"),
        "per_class": report.get("per_class"),
        "n_cases": len(test),
        "threshold_from": "validation" if threshold is not None else None,
    }
    return record, prediction_record(task, outputs, test, split="test")


def _training_fields(fit_result: Any, report_seconds: float) -> dict[str, Any]:
    """How a finished training went: best epoch, epochs run, early stop, history, seconds, the learned flag."""
    return {
        "best_epoch": fit_result.best_epoch,
        "epochs": len(fit_result.history),
        "stopped_early": fit_result.stopped_early,
        "history": [
            {"epoch": h.epoch, "train_loss": h.train_loss, "value": h.value, "seconds": h.seconds}
            for h in fit_result.history
        ],
        # Training and validation summed over epochs (and sessions, for a resumed candidate) plus the validation
        # report: what a proxy trial's `seconds` counts too, so the two compare. The test evaluation is not in it.
        "seconds": float(sum(h.seconds for h in fit_result.history)) + report_seconds,
        "learned": fit_result.learned,
    }


def _test_text(task: TaskConfig, result: dict[str, Any]) -> str:
    """``test <objective> 0.8123`` for the log, or why there is no test figure."""
    test = result.get("test") or {}
    value = ((test.get("metrics") or {}).get("objective") or {}).get("value")
    if value is None:
        return f"no test figure ({test.get('skipped') or 'not measurable on the test split'})"
    return f"test {task.objective.name} {value:.4f}"


def _failed(
    rd: RunDir,
    record: dict[str, Any],
    cdir: Path,
    reason: str,
    log: Callable[..., None],
    t0: float,
    bar: _Progress,
) -> dict[str, Any]:
    """Record a training that failed (``state`` failed, with its reason) in its folder ``cdir``; a re-run retries it."""
    record.update(state="failed", reason=reason, seconds=time.perf_counter() - t0)
    rd.write_retrained(int(record["trial"]), record, seed_dir=cdir)
    log(f"failed: {reason} (a re-run retries it)", logging.WARNING)
    bar.done(None, record["trial"])
    return record


def _combine_seeds(rd: RunDir, task: TaskConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the candidate's record: its first seed's, with every seed's outcome, the seed mean and spread.

    With one seed the record is the first seed's as it is. With several, ``retrain/<n>/metrics.json`` gains
    ``seeds`` (one row per seed), ``val_mean``/``val_sd``/``test_mean`` over the seeds that completed, and
    ``learned_majority``: False when fewer than half of the completed seeds started learning (``learned`` stays
    the first seed's own flag).
    """
    first = dict(runs[0])
    if len(runs) == 1:
        return first
    rows = []
    for r in runs:
        done = r.get("state") == "complete"
        rows.append(
            {
                "seed_index": r.get("seed_index", 0),
                "seed": r.get("seed"),
                "state": r.get("state"),
                "reason": r.get("reason"),
                "val": r["val"]["objective"] if done else None,
                "test": ((r["test"]["metrics"].get("objective") or {}).get("value") if done else None),
                "learned": r.get("learned") if done else None,
                "best_epoch": r.get("best_epoch"),
                "epochs": r.get("epochs"),
                "seconds": r.get("seconds"),
                "dir": str(seed_dir(rd, int(r["trial"]), int(r.get("seed_index", 0))).relative_to(rd.root)),
            }
        )
        if r.get("from_ladder"):
            rows[-1]["from_ladder"] = True
    vals = [row["val"] for row in rows if row["val"] is not None]
    tests = [row["test"] for row in rows if row["test"] is not None]
    mean, sd, _ = mean_std(vals)
    learned_flags = [row["learned"] for row in rows if row["learned"] is not None]
    first.update(
        seeds=rows,
        val_mean=mean,
        val_sd=sd,
        test_mean=(sum(tests) / len(tests)) if tests else None,
        seeds_learned=sum(1 for f in learned_flags if f),
    )
    if learned_flags:
        first["learned_majority"] = sum(1 for f in learned_flags if f) * 2 >= len(learned_flags)
    if first.get("state") == "complete" and first != runs[0]:
        rd.write_retrained(int(first["trial"]), first)
    return first


def _learned(r: dict[str, Any]) -> bool:
    """Whether a candidate started learning at full fidelity: on most of its seeds, or on its one seed."""
    return r.get("learned_majority", r.get("learned")) is not False


def _val_score(r: dict[str, Any]) -> float | None:
    """A candidate's full-fidelity validation score: its seed mean, or its one seed's objective."""
    if r.get("val_mean") is not None:
        return float(r["val_mean"])
    return float(r["val"]["objective"]) if r.get("state") == "complete" else None


def _remedies(task: TaskConfig, trial: Any, proxy: TrialRecord | None) -> dict[str, str]:
    """The loss and batch sampling the proxy trial trained with (one imbalance remedy, see ``suggest_imbalance``).

    Its record says first; a trial without one (another machine's run directory) falls back to its sampled
    parameters, then to the task's settings.
    """
    from mednas.train._losses import resolve_loss

    recorded_sampling = proxy.sampling if proxy is not None else None
    recorded_loss = proxy.loss if proxy is not None else None
    sampling = recorded_sampling or trial.params.get("sampling") or task.training.sampling
    loss = recorded_loss or trial.params.get("loss") or task.training.loss
    return {"loss": resolve_loss(loss, task.problem, sampling), "sampling": sampling}


def _fidelity(
    task: TaskConfig, study: Any, candidates: list[Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    trials = [t.number for t in candidates]
    # The search's seed mean where it re-evaluated its best candidates with extra proxy seeds.
    proxy = [float(t.user_attrs.get("proxy_mean", t.values[0])) for t in candidates]
    full_seeds = [
        [row["val"] for row in r["seeds"]]
        if r.get("seeds")
        else [r["val"]["objective"] if r.get("state") == "complete" else None]
        for r in records
    ]
    learned = [t.user_attrs.get("learned") is not False and _learned(r) for t, r in zip(candidates, records)]
    maximize = study.directions[0].name == "MAXIMIZE"
    record = proxy_fidelity(
        trials, proxy, None, learned, maximize=maximize, full_seeds=full_seeds, seed=task.search.seed
    )
    record["objective"] = task.objective.name
    record["maximize"] = maximize
    record["proxy_seed_mean"] = [t.number for t in candidates if "proxy_mean" in t.user_attrs]
    if task.search.fidelity == "ladder":
        # A top-rung candidate's "proxy" score is its full-resolution score on the top rung, and its first seed
        # here is those very weights: the tau says how the ladder's ranking held, not how a low-resolution one did.
        record["ladder"] = True
        record["from_ladder"] = [r["trial"] for r in records if r.get("from_ladder")]
        record["ladder_note"] = (
            "ladder run: a top-rung candidate's proxy score is its full-resolution top-rung score, and its first "
            "full-fidelity seed is the top rung's weights (from_ladder); this is not a proxy ranking held"
        )
    return record


def _update_summary(
    rd: RunDir,
    task: TaskConfig,
    full: Fidelity,
    candidates: list[Any],
    records: list[dict[str, Any]],
    fidelity: dict[str, Any],
    top_k: int,
) -> dict[str, Any]:
    """Set the ``retrain`` and ``proxy_fidelity`` keys of ``summary.json``; return the summary as written.

    Written through :meth:`RunDir.update_summary`, so a search still running in the same directory (another
    worker rewriting its keys) neither loses these keys nor has its own overwritten.
    """
    sign = 1.0 if fidelity.get("maximize", True) else -1.0
    complete = [r for r in records if r.get("state") == "complete"]
    best = max(complete, key=lambda r: (_learned(r), sign * (_val_score(r) or 0.0)), default=None)
    retrain = {
        "top_k": top_k,
        "seeds": max((len(r.get("seeds") or [r]) for r in records), default=1),
        "candidates": [t.number for t in candidates],
        "best": best["trial"] if best else None,
        "shape": list(full.shape),
        "patch": full.to_dict()["patch"],
        "max_epochs": full.epochs,
        "patience": full.patience,
        "results": [_result_row(r) for r in records],
        "failed": [r["trial"] for r in records if r.get("state") != "complete"],
        "cost": _cost(complete),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # A directory without a summary yet (the search's was lost) starts one that names the task.
    return rd.update_summary(lambda s: s or {"task": task.name}, retrain=retrain, proxy_fidelity=fidelity)


def _result_row(r: dict[str, Any]) -> dict[str, Any]:
    """One candidate's row of ``summary.json``'s ``retrain.results``."""
    row: dict[str, Any] = {
        "trial": r["trial"],
        "state": r["state"],
        "family": r.get("family"),
        "params": r.get("params"),
        "proxy": r["proxy"]["value"],
        "learned": _learned(r),
    }
    if r.get("state") != "complete":
        row["reason"] = r.get("reason")
        return row
    row["val"] = r["val"]["metrics"].get("objective")
    row["test"] = r["test"]["metrics"].get("objective")
    row["seconds"] = r.get("seconds")
    if r.get("from_ladder"):
        row["from_ladder"] = True
    if r.get("seeds"):
        row.update(
            val_mean=r.get("val_mean"),
            val_sd=r.get("val_sd"),
            test_mean=r.get("test_mean"),
            seed_values=[s["val"] for s in r["seeds"]],
        )
    return row


def _cost(complete: list[dict[str, Any]]) -> dict[str, Any]:
    """What the proxy and the full-fidelity trainings of the completed candidates cost, and their ratio."""
    proxy_s = sum(float(r["proxy"].get("seconds") or 0.0) for r in complete)
    # Every seed's training counts in the full-fidelity cost; the ratio compares one full training with one proxy.
    # A first seed taken from the ladder's top rung was not trained here: it is no full training's cost.
    trainings = [
        row
        for r in complete
        for row in (r.get("seeds") or [r])
        if row.get("state") == "complete" and not row.get("from_ladder")
    ]
    full_s = sum(float(row.get("seconds") or 0.0) for row in trainings)
    per_full = full_s / len(trainings) if trainings else 0.0
    per_proxy = proxy_s / len(complete) if complete else 0.0
    return {
        "proxy_seconds": proxy_s,
        "full_seconds": full_s,
        "full_trainings": len(trainings),
        "full_over_proxy": (per_full / per_proxy) if per_proxy > 0 else None,
    }


class _Progress:
    """The retrain's progress bar: candidate i of k, its epoch, the best full-fidelity objective so far."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.bar = ProgressBar("retrain", total=total, unit="candidate", enabled=enabled)
        self.total = total
        self.best: tuple[float, int] | None = None
        #: What the bar says of the training in progress (``candidate 2/3: trial 7, seed 1/2``).
        self.detail = ""

    def stage(self, name: str, done: int, total: int) -> None:
        self.bar.stage(name, done, total)

    def candidate(self, i: int, trial: int, k: int = 0, seeds: int = 1) -> None:
        n = self.total // max(1, seeds)
        self.detail = f"candidate {i + 1}/{n}: trial {trial}" + (
            f", seed {k + 1}/{seeds}" if seeds > 1 else ""
        )
        self.bar.describe(self.detail, force=True)

    def epoch(self, epoch: int, epochs: int, value: float) -> None:
        self.bar.describe(f"{self.detail} epoch {epoch}/{epochs}, objective {value:.4f}")

    def done(self, value: float | None, trial: int) -> None:
        if value is not None and math.isfinite(value) and (self.best is None or value > self.best[0]):
            self.best = (value, trial)
        if self.best:
            self.bar.postfix(f"best {self.best[0]:.4f} (trial {self.best[1]})")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.describe(None)  # the finished bar names the step only
        self.bar.close()
