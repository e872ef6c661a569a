"""Cross-validated retraining: K patient-grouped folds over the training and validation patients.

Each chosen candidate is trained once per fold (fold i validates on fold i and trains on the others) and ranked by
its fold mean, with a t interval over folds. The chosen candidate's fold models and their probability-averaging
ensemble are the final models: each is evaluated on the held-out test split once, and nothing is chosen on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednas.config import TaskConfig
from mednas.data import ArrayData, DataPlan
from mednas.errors import ConfigError, RunDirError
from mednas.retraining._fidelity import mean_std, proxy_fidelity
from mednas.retraining._retrain import (
    RetrainResult,
    _check_specs,
    _cost,
    _epoch_reporter,
    _failed,
    _forget_checkpoint,
    _learned,
    _load_spec,
    _Log,
    _open_run_study,
    _Progress,
    _same_budget,
    _start_record,
    _training_fields,
    _validation_report,
    select_candidates,
)
from mednas.rundir import RunDir
from mednas.train import PATCH_OVERLAP, Fidelity, space_for, train_candidate

if TYPE_CHECKING:
    from mednas.train import TrainedCandidate

logger = logging.getLogger("mednas.retraining")

__all__ = ["ENSEMBLE_FILE", "FOLDS_FILE", "run_fold_retrain", "t_interval"]

#: The fold assignment, in ``RUN_DIR/retrain/``.
FOLDS_FILE = "folds.json"
#: The chosen candidate's fold ensemble: members, operating point, calibration, test record (``RUN_DIR/retrain/``).
ENSEMBLE_FILE = "ensemble.json"
# Entropy that keeps a fold's training seed apart from the seeds of a plain retrain of the same trial.
_FOLD_ENTROPY = 0xF01D


def t_interval(values: list[float | None], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample SD and Student-t interval of the mean over the finite ``values``.

    Example:
        >>> [round(v, 3) for v in t_interval([0.8, 0.9, 1.0])["ci95"]]
        [0.652, 1.148]
    """
    from scipy import stats

    mean, sd, n = mean_std(values)
    ci = None
    if mean is not None and sd is not None and n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "sd": sd, "n": n, "ci95": ci, "method": f"Student t over {n} folds"}


def run_fold_retrain(
    run_dir: str | os.PathLike[str],
    *,
    folds: int,
    top_k: int = 3,
    epochs: int | None = None,
    patch: list[int] | tuple[int, ...] | None = None,
    device: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_resamples: int | None = None,
    show_progress: bool = True,
    threads: int | None = None,
) -> RetrainResult:
    """Retrain the top-k candidates with ``folds`` patient-grouped folds; test the chosen one's models once each.

    Args:
        run_dir: A run directory written by ``mednas search``.
        folds: Folds (at least 2, at most the number of training and validation patients).
        top_k, epochs, patch, device, storage, study_name, n_resamples, show_progress, threads: As for
            :func:`~mednas.retraining.run_retrain`.

    Returns:
        One record per candidate (``folds``: each fold's record; ``val_mean``, ``val_sd``, ``val_ci95``), the
        proxy-fidelity record (against the fold means), the summary, and ``ensemble`` (``retrain/ensemble.json``).

    Raises:
        ConfigError: ``folds`` < 2, or more folds than patients.
        RunDirError: For a directory without a search.
    """
    from mednas._threads import configure_threads
    from mednas.data import plan_data, read_or_create_salt
    from mednas.train import select_device

    _check_counts(folds, top_k)
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
    bar = _Progress(len(candidates) * folds, enabled=show_progress)
    try:
        plan = plan_data(task, rd, salt=salt, progress=bar.stage)
        assignment = _assign(rd, task, plan, folds)
        full = Fidelity.full(task, plan.full_shape, epochs=epochs, patch=patch)
        pool = _Pool(plan, full, bar)
        _log_start(task, rd, full, len(candidates), folds, dev)
        runs = [
            [
                _train_fold(task, rd, plan, trial, full, pool, assignment, i, dev, bar, n_resamples)
                for i in range(folds)
            ]
            for trial in candidates
        ]
    finally:
        bar.close()
    maximize = study.directions[0].name == "MAXIMIZE"
    records = [_aggregate(trial, r) for trial, r in zip(candidates, runs)]
    best = _choose(records, maximize)
    ensemble = None
    if best is not None:
        ensemble = _final_models(task, rd, plan, full, pool, best, assignment, dev, n_resamples)
    fidelity = _fidelity(task, candidates, records, maximize)
    summary = _update_summary(rd, task, full, candidates, records, fidelity, top_k, assignment, ensemble)
    return RetrainResult(rd.root, records, fidelity, summary, folds=folds, ensemble=ensemble)


def _check_counts(folds: int, top_k: int) -> None:
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")


def _log_start(task: TaskConfig, rd: RunDir, full: Fidelity, n: int, folds: int, device: str) -> None:
    logger.info(
        "retrain %s: top %d of %s, %d patient-grouped folds over train+val, %s, up to %d epochs, device %s",
        task.name,
        n,
        rd.root,
        folds,
        "x".join(map(str, full.shape)),
        full.epochs,
        device,
    )


class _Pool:
    """The training and validation cases at the full shape, loaded once; a fold's two sets are row subsets."""

    def __init__(self, plan: DataPlan, full: Fidelity, bar: _Progress) -> None:
        train, val = full.load(
            plan, seed=0, progress=lambda split, d, t: bar.stage(f"full-size {split}", d, t)
        )
        self.data = ArrayData(
            np.concatenate([np.asarray(train.images), np.asarray(val.images)]),
            np.concatenate([np.asarray(train.labels), np.asarray(val.labels)]),
            [*train.keys, *val.keys],
            [*train.patients, *val.patients],
        )
        self.row = {k: i for i, k in enumerate(self.data.keys)}
        self.plan, self.full = plan, full
        self._test: ArrayData | None = None

    def split(self, val_keys: list[str]) -> tuple[ArrayData, ArrayData]:
        """``(train, val)`` of the fold whose validation cases are ``val_keys``."""
        held = {self.row[k] for k in val_keys}
        train_rows = [i for i in range(len(self.data)) if i not in held]
        return self.data.subset(train_rows), self.data.subset([self.row[k] for k in val_keys])

    def test(self) -> ArrayData:
        if self._test is None:
            # The only read of the held-out test split: after every fold is trained, for the final models.
            self._test = self.plan.arrays("test", self.full.shape, allow_test=True)
        return self._test


def _assign(rd: RunDir, task: TaskConfig, plan: DataPlan, k: int) -> dict[str, Any]:
    """Make the patient-grouped folds over train+val (seeded by the task seed) and write ``retrain/folds.json``."""
    from mednas.data import make_folds

    cases = plan.cases("train") + plan.cases("val")
    n_patients = len({c.patient for c in cases})
    if n_patients < k:
        raise ConfigError(f"--folds {k}: the training and validation splits hold only {n_patients} patients")
    stratify = task.problem == "classification" and task.data.split.stratify
    keys = make_folds(cases, k, task.search.seed, stratify=stratify)
    patient_of = {c.key: c.patient for c in cases}
    record = {
        "k": k,
        "seed": task.search.seed,
        "method": f"patient-grouped{', label-stratified' if stratify else ''}, over train+val; test untouched",
        "hash": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16],
        "folds": [
            {"n_cases": len(f), "n_patients": len({patient_of[c] for c in f}), "cases": f} for f in keys
        ],
    }
    rd.write_json(rd.root / "retrain" / FOLDS_FILE, record)
    return record


def _fold_dir(rd: RunDir, number: int, i: int) -> Path:
    return rd.retrain_dir(number) / f"fold-{i}"


def _train_fold(
    task: TaskConfig,
    rd: RunDir,
    plan: DataPlan,
    trial: Any,
    full: Fidelity,
    pool: _Pool,
    assignment: dict[str, Any],
    i: int,
    device: str,
    bar: _Progress,
    n_resamples: int | None,
) -> dict[str, Any]:
    """Train candidate ``trial`` on every fold but ``i``, validate on fold ``i``; a finished one is skipped."""
    from mednas.train import TrainingDiverged, derive_seed

    n, k = trial.number, int(assignment["k"])
    cdir = _fold_dir(rd, n, i)
    ckpt = cdir / "checkpoint.pt"
    seed = derive_seed(task.search.seed, n, _FOLD_ENTROPY, i)
    bar.detail = f"trial {n} fold {i + 1}/{k}"
    bar.bar.describe(bar.detail, force=True)
    previous = rd.retrained(n, seed_dir=cdir)
    same = previous is not None and _same_budget(previous, full, seed)
    if same and previous.get("state") == "complete" and previous.get("fold_hash") == assignment["hash"]:
        bar.done(previous["val"]["objective"], n)
        logger.info("trial %d fold %d/%d: already retrained; skipped", n, i + 1, k)
        return previous
    cdir.mkdir(parents=True, exist_ok=True)
    log = _Log(rd, cdir / "log.txt")
    if previous is not None and (not same or previous.get("fold_hash") != assignment["hash"]):
        _forget_checkpoint(ckpt, log)
    spec = _load_spec(rd, task, plan, trial)
    rd.write_json(
        cdir / "spec.json", space_for(task, spec.family).adapt_to_shape(spec, full.net_shape).to_dict()
    )
    record = _start_record(task, plan, trial, spec, full, seed, 0, rd.trial(n))
    record.pop("seed_index", None)
    record.update(fold=i, folds=k, fold_hash=assignment["hash"])
    log(f"retraining trial {n} fold {i + 1}/{k}: {spec.class_name} {spec.hash}, seed {seed}")
    train, val = pool.split(assignment["folds"][i]["cases"])
    t0 = time.perf_counter()
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
        ckpt.unlink(missing_ok=True)
        return _failed(rd, record, cdir, f"diverged: {exc}", log, t0, bar)
    except Exception as exc:  # noqa: BLE001 - one broken fold must not stop the others
        log(traceback.format_exc(), logging.DEBUG)
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        return _failed(rd, record, cdir, reason, log, t0, bar)
    result = _finish_fold(task, rd, cdir, record, trained, val, seed, n_resamples)
    ckpt.unlink(missing_ok=True)
    log(
        f"complete: validation {task.objective.name} {result['val']['objective']:.4f}; {result['seconds']:.1f}s"
    )
    bar.done(result["val"]["objective"], n)
    return result


def _finish_fold(
    task: TaskConfig,
    rd: RunDir,
    cdir: Path,
    record: dict[str, Any],
    trained: TrainedCandidate,
    val: ArrayData,
    seed: int,
    n_resamples: int | None,
) -> dict[str, Any]:
    """Write a fold model's weights, validation report and predictions (no test: only final models are tested)."""
    from mednas.metrics._objective import prediction_record
    from mednas.train._loop import save_weights

    fit_result = trained.result
    save_weights(cdir / "model.pt", fit_result.best_state)
    t_report = time.perf_counter()
    outputs, report, calibration = _validation_report(task, fit_result.best_outputs, val, seed, n_resamples)
    rd.write_json(cdir / "predictions.json", {"val": prediction_record(task, outputs, val, split="val")})
    value = float(fit_result.best_value) if math.isfinite(fit_result.best_value) else 0.0
    record.update(
        state="complete",
        divisor=list(trained.divisor),
        params=int(sum(p.numel() for p in trained.model.parameters())),
        val={"objective": value, "metrics": report["metrics"], "per_class": report.get("per_class")},
        operating_point=report.get("operating_point"),
        test=None,
        **_training_fields(fit_result, time.perf_counter() - t_report),
        weights="model.pt",
        predictions="predictions.json",
    )
    if calibration is not None:
        record.update(
            calibration=calibration,
            temperature=calibration["temperature"],
            ece_before=calibration["ece_before"],
            ece_after=calibration["ece_after"],
        )
    rd.write_retrained(int(record["trial"]), record, seed_dir=cdir)
    return record


def _aggregate(trial: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A candidate's record over its folds: each fold's row, the fold mean, SD and t interval."""
    done = [r for r in runs if r.get("state") == "complete"]
    rows = [
        {
            "fold": r.get("fold"),
            "state": r.get("state"),
            "reason": r.get("reason"),
            "val": r["val"]["objective"] if r.get("state") == "complete" else None,
            "learned": r.get("learned"),
            "dir": f"retrain/{trial.number}/fold-{r.get('fold')}",
        }
        for r in runs
    ]
    stats = t_interval([row["val"] for row in rows])
    learned = [bool(r.get("learned")) for r in done]
    first = runs[0]
    return {
        "trial": trial.number,
        "state": "complete" if len(done) == len(runs) else "failed",
        "reason": None if len(done) == len(runs) else f"{len(runs) - len(done)} fold(s) did not complete",
        "family": first.get("family"),
        "params": next((r.get("params") for r in done), None),
        "proxy": first.get("proxy"),
        "folds": rows,
        "val_mean": stats["mean"],
        "val_sd": stats["sd"],
        "val_ci95": stats["ci95"],
        "learned": bool(learned) and sum(learned) * 2 >= len(learned),
        "seconds": float(sum(float(r.get("seconds") or 0.0) for r in done)),
        "runs": runs,
    }


def _choose(records: list[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    """The candidate with the best fold mean (candidates that never learned last); only complete ones count."""
    sign = 1.0 if maximize else -1.0
    complete = [r for r in records if r["state"] == "complete" and r["val_mean"] is not None]
    return max(complete, key=lambda r: (_learned(r), sign * r["val_mean"]), default=None)


def _load_member(rd: RunDir, run: dict[str, Any], device: str) -> Any:
    """A fold model rebuilt from its ``spec.json`` and ``model.pt``, in eval mode on ``device``."""
    from mednas.spec import build, load_spec
    from mednas.train import load_weights

    cdir = _fold_dir(rd, int(run["trial"]), int(run["fold"]))
    model = build(load_spec(rd.read_json(cdir / "spec.json"), cdir / "spec.json", error=RunDirError))
    model.load_state_dict(load_weights(cdir / "model.pt"))
    return model.to(device).eval()


def _predict(
    task: TaskConfig, model: Any, images: Any, run: dict[str, Any], full: Fidelity, device: str
) -> Any:
    from mednas.train import predict

    return predict(
        model,
        images,
        problem=task.problem,
        batch_size=task.training.batch_size,
        device=device,
        divisor=tuple(int(d) for d in run["divisor"]),
        patch=full.patch,
        overlap=PATCH_OVERLAP,
    )


def _calibrated(task: TaskConfig, outputs: Any, temperature: float | None) -> Any:
    from mednas.metrics import apply_temperature, logits_from_probabilities

    if task.problem != "classification" or temperature is None:
        return outputs
    return apply_temperature(logits_from_probabilities(outputs), temperature)


def _test_record(
    task: TaskConfig, outputs: Any, test: ArrayData, seed: int, n_resamples: int | None, op: Any
) -> Any:
    """The one test evaluation of a final model at its validation threshold (a task without test: said so)."""
    from mednas.metrics._objective import objective_report

    if not len(test):
        return {"metrics": {}, "operating_point": None, "n_cases": 0, "skipped": "the task has no test split"}
    threshold = float(op["threshold"]) if op and op.get("threshold") is not None else None
    report = objective_report(task, outputs, test, seed=seed, n_resamples=n_resamples, threshold=threshold)
    return {
        "metrics": report["metrics"],
        "operating_point": report.get("operating_point"),
        "per_class": report.get("per_class"),
        "n_cases": len(test),
        "threshold_from": "validation" if threshold is not None else None,
    }


def _final_models(
    task: TaskConfig,
    rd: RunDir,
    plan: DataPlan,
    full: Fidelity,
    pool: _Pool,
    best: dict[str, Any],
    assignment: dict[str, Any],
    device: str,
    n_resamples: int | None,
) -> dict[str, Any]:
    """Test the chosen candidate's fold models once each and their ensemble once; write ``retrain/ensemble.json``.

    The ensemble averages the members' probabilities (:class:`mednas.train._ensemble.EnsembleNet`, what export
    ships). Its temperature and operating point are chosen on the pooled out-of-fold validation predictions (each
    case predicted by the member that did not train on it), by the task's rule; the test split only measures.
    """
    from mednas.train._ensemble import EnsembleNet

    runs = best["runs"]
    seed = int(runs[0]["seed"])
    test = pool.test()
    members, oof, oof_rows = [], [], []
    for run in runs:
        model = _load_member(rd, run, device)
        _, val = pool.split(assignment["folds"][int(run["fold"])]["cases"])
        oof.append(_predict(task, model, val.images, run, full, device))
        oof_rows += [pool.row[k] for k in val.keys]
        if len(test):
            out = _calibrated(
                task, _predict(task, model, test.images, run, full, device), run.get("temperature")
            )
            run["test"] = _test_record(task, out, test, seed, n_resamples, run.get("operating_point"))
        else:
            run["test"] = _test_record(task, None, test, seed, n_resamples, None)
        rd.write_retrained(
            int(run["trial"]), run, seed_dir=_fold_dir(rd, int(run["trial"]), int(run["fold"]))
        )
        members.append(model)
    pooled = pool.data.subset(oof_rows)
    outputs, report, calibration = _validation_report(task, np.concatenate(oof), pooled, seed, n_resamples)
    op = report.get("operating_point")
    temperature = (calibration or {}).get("temperature")
    if len(test):
        ens = EnsembleNet(members).eval()
        out = _calibrated(task, _predict(task, ens, test.images, runs[0], full, device), temperature)
        test_rec = _test_record(task, out, test, seed, n_resamples, op)
    else:
        test_rec = _test_record(task, None, test, seed, n_resamples, None)
    record = _ensemble_record(task, best, runs, report, op, calibration, test_rec, len(pooled))
    rd.write_json(rd.root / "retrain" / ENSEMBLE_FILE, record)
    return record


def _ensemble_record(
    task: TaskConfig,
    best: dict[str, Any],
    runs: list[dict[str, Any]],
    report: dict[str, Any],
    op: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
    test: dict[str, Any],
    n_oof: int,
) -> dict[str, Any]:
    """``retrain/ensemble.json``: the members, how they are combined, the ensemble's and the best member's figures."""
    sign = 1.0 if task.objective.directions[0] == "maximize" else -1.0
    member = max(runs, key=lambda r: sign * float(r["val"]["objective"]))
    return {
        "trial": best["trial"],
        "k": len(runs),
        "members": [f"retrain/{r['trial']}/fold-{r['fold']}" for r in runs],
        "combine": "mean of the members' softmax probabilities; the network outputs their log (softmax of it is "
        "the mean), so the bundle's postprocessing is a single model's",
        "val": {
            "metrics": report["metrics"],
            "per_class": report.get("per_class"),
            "n_cases": n_oof,
            "population": "pooled out-of-fold validation predictions (each case by the member that did not train "
            "on it)",
        },
        "operating_point": op,
        "calibration": calibration,
        "temperature": (calibration or {}).get("temperature"),
        "test": test,
        "fold_mean": {"mean": best["val_mean"], "sd": best["val_sd"], "ci95": best["val_ci95"]},
        "best_member": {
            "fold": member["fold"],
            "dir": f"retrain/{member['trial']}/fold-{member['fold']}",
            "val": member["val"],
            "operating_point": member.get("operating_point"),
            "test": member.get("test"),
            "temperature": member.get("temperature"),
        },
        "learned": best["learned"],
    }


def _fidelity(
    task: TaskConfig, candidates: list[Any], records: list[dict[str, Any]], maximize: bool
) -> dict[str, Any]:
    """Proxy fidelity against the fold means (folds validate on different patients: no seed ceiling here)."""
    record = proxy_fidelity(
        [t.number for t in candidates],
        [float(t.user_attrs.get("proxy_mean", t.values[0])) for t in candidates],
        [r["val_mean"] if r["state"] == "complete" else None for r in records],
        [t.user_attrs.get("learned") is not False and _learned(r) for t, r in zip(candidates, records)],
        maximize=maximize,
        seed=task.search.seed,
    )
    record.update(objective=task.objective.name, maximize=maximize, full_is="fold mean")
    return record


def _update_summary(
    rd: RunDir,
    task: TaskConfig,
    full: Fidelity,
    candidates: list[Any],
    records: list[dict[str, Any]],
    fidelity: dict[str, Any],
    top_k: int,
    assignment: dict[str, Any],
    ensemble: dict[str, Any] | None,
) -> dict[str, Any]:
    """Set ``summary.json``'s ``retrain`` (with ``folds``) and ``proxy_fidelity`` keys; return the summary."""
    best = ensemble["trial"] if ensemble else None
    retrain = {
        "top_k": top_k,
        "folds": assignment["k"],
        "folds_file": f"retrain/{FOLDS_FILE}",
        "seeds": 1,
        "candidates": [t.number for t in candidates],
        "best": best,
        # The best fold model of the chosen candidate: what a plain `mednas export` ships.
        "best_dir": ensemble["best_member"]["dir"] if ensemble else None,
        "ensemble": f"retrain/{ENSEMBLE_FILE}" if ensemble else None,
        "shape": list(full.shape),
        "patch": full.to_dict()["patch"],
        "max_epochs": full.epochs,
        "patience": full.patience,
        "results": [_result_row(r) for r in records],
        "failed": [r["trial"] for r in records if r["state"] != "complete"],
        "cost": _cost([{**r, "seeds": r["runs"]} for r in records if r["state"] == "complete"]),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if ensemble:
        retrain["ensemble_test"] = (ensemble["test"]["metrics"] or {}).get("objective")
    return rd.update_summary(lambda s: s or {"task": task.name}, retrain=retrain, proxy_fidelity=fidelity)


def _result_row(r: dict[str, Any]) -> dict[str, Any]:
    """One candidate's row of ``summary.json``'s ``retrain.results`` in a fold retrain."""
    return {
        "trial": r["trial"],
        "state": r["state"],
        "reason": r["reason"],
        "family": r.get("family"),
        "proxy": (r.get("proxy") or {}).get("value"),
        "learned": r["learned"],
        "fold_values": [row["val"] for row in r["folds"]],
        "val_mean": r["val_mean"],
        "val_sd": r["val_sd"],
        "val_ci95": r["val_ci95"],
        "seconds": r["seconds"],
    }
