"""The typed Python API that the ``mednas`` command wraps: search, and (as they land) retrain, export, predict.

Example:
    >>> import mednas
    >>> result = mednas.search("tasks/demo-xray-nodule.yaml", n_trials=4, run_dir="runs/x")  # doctest: +SKIP
    >>> result.summary["best"]["values"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednas._registry import PluginRegistry
from mednas._threads import configure_threads
from mednas.config import TaskConfig, install_registries, load_task, with_settings

if TYPE_CHECKING:
    # Result types only: the packages that define them import torch, MONAI or Optuna, which `import mednas`
    # must not pull in (each verb imports its package when it is called).
    from mednas.bundle import BundleModel, ExportResult, Prediction
    from mednas.evaluation import EvaluationResult
    from mednas.reporting import ReportResult
    from mednas.retraining import CalibrationResult, RetrainResult
    from mednas.study import SearchResult

__all__ = [
    "calibrate_proxy",
    "default_run_dir",
    "evaluate",
    "export",
    "load",
    "load_config",
    "predict",
    "report",
    "retrain",
    "reveal_splits",
    "search",
    "status",
]


def _space_registry() -> PluginRegistry[Any]:
    from mednas.spaces import SPACES

    return SPACES


def _metric_registry() -> PluginRegistry[Any]:
    from mednas.metrics._terms import METRICS

    return METRICS


def _layout_registry() -> PluginRegistry[Any]:
    from mednas.data._layouts_base import LAYOUTS

    return LAYOUTS


def _loss_registry() -> PluginRegistry[Any]:
    from mednas.train._losses import LOSSES

    return LOSSES


# A task names search spaces, metric terms, layouts and losses that plugins may add; their registries live above
# the config layer, which checks those names through what is installed here (each imported on first use, so
# that `import mednas` stays light). `import mednas` imports this module, so every task is loaded after it.
install_registries(
    space=_space_registry, metric=_metric_registry, layout=_layout_registry, loss=_loss_registry
)


def load_config(
    task: str | os.PathLike[str] | TaskConfig | dict[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
) -> TaskConfig:
    """Return a validated task from a file, a mapping or an existing :class:`TaskConfig`."""
    if isinstance(task, TaskConfig):
        if presets or overrides:
            from mednas.config import task_to_dict

            return load_task(task_to_dict(task), presets=presets, overrides=overrides)
        return task
    return load_task(task, presets=presets, overrides=overrides)


def default_run_dir(task: TaskConfig) -> Path:
    """``runs/<task name>`` under the working directory: re-running a command continues the same run."""
    return Path("runs") / task.name


def search(
    task: str | os.PathLike[str] | TaskConfig | dict[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    run_dir: str | os.PathLike[str] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    show_progress: bool = True,
    workers: int = 1,
    gpus: Sequence[int] | None = None,
    trials_per_gpu: int = 1,
    worker: bool = False,
    storage_timeout: float | None = None,
    threads: int | None = None,
    mlflow: str | None = None,
) -> SearchResult:
    """Create or continue a search.

    Args:
        task: Task file, mapping or config.
        presets: Preset files/names merged under the task.
        overrides: ``key=value`` overrides.
        run_dir: Run directory (default ``runs/<task name>``).
        storage: Optuna storage URL (default: SQLite in the run directory).
        study_name: Study name (default: task name).
        n_trials: Finished trials to reach (default: the task's ``search.n_trials``).
        timeout: Seconds after which no new trial starts.
        device: ``auto``, ``cpu``, ``cuda``.
        show_progress: Progress bar on stderr.
        workers: Local worker processes sharing the study (CPU: the cores are split between them).
        gpus: GPU indices to pack ``trials_per_gpu`` concurrent trials onto.
        trials_per_gpu: Concurrent proxy trials per GPU.
        worker: Internal: this process is a worker started by another search.
        storage_timeout: Seconds a PostgreSQL/MySQL server gets to connect and answer (default 10).
        threads: CPU threads per process (default: the task's ``training.threads``, else the CPUs this process may
            use divided by the local workers, fewer when the machine is busy at start).
        mlflow: MLflow tracking URI that each trial is logged to as a run (default: the task's ``tracking.mlflow``).

    Returns:
        :class:`mednas.study.SearchResult` with ``run_dir`` and ``summary``.
    """
    from mednas.study import run_search

    cfg = load_config(task, presets=presets, overrides=overrides)
    if mlflow is not None:
        cfg = with_settings(cfg, {"tracking.mlflow": mlflow})
    return run_search(
        cfg,
        run_dir if run_dir is not None else default_run_dir(cfg),
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
        timeout=timeout,
        device=device,
        show_progress=show_progress,
        workers=workers,
        gpus=list(gpus) if gpus else None,
        trials_per_gpu=trials_per_gpu,
        worker=worker,
        storage_timeout=storage_timeout,
        threads=threads,
    )


def retrain(
    run_dir: str | os.PathLike[str],
    top_k: int = 3,
    *,
    epochs: int | None = None,
    patch: Sequence[int] | None = None,
    device: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_resamples: int | None = None,
    seeds: int = 2,
    show_progress: bool = True,
    threads: int | None = None,
    folds: int | None = None,
    mlflow: str | None = None,
) -> RetrainResult:
    """Retrain a search's top-k candidates at full fidelity, test them once, and measure proxy fidelity.

    Args:
        run_dir: Run directory of a search.
        top_k: Candidates to retrain (by proxy objective; the Pareto front for several objectives).
        epochs: Maximum epochs (default: the task's ``training.epochs``; early stopping after
            ``training.patience`` epochs without improvement).
        patch: Patch size for patch training with sliding-window validation (default: ``training.patch``).
        device: ``auto``, ``cpu``, ``cuda``.
        storage: Optuna storage URL the search used (default: SQLite in the run directory).
        study_name: Study name (default: the search's).
        n_resamples: Bootstrap resamples (over patients) for the validation and test intervals (default: the
            task's ``objective.bootstrap.resamples``).
        seeds: Full-fidelity trainings per candidate with different seeds (default 2): candidates are ranked by
            the seed mean and ``proxy_fidelity.seed_ceiling_tau`` records how far full training agrees with itself.
        show_progress: Progress bar on stderr.
        threads: CPU threads (default: the task's ``training.threads``, else the CPUs this process may use, fewer
            when the machine is busy at start).
        folds: Cross-validated retraining (at least 2): each candidate is trained once per patient-grouped fold of
            the training and validation patients (``retrain/<n>/fold-<i>/``; ``seeds`` is not used), ranked by its
            fold mean, and the chosen candidate's fold models and their ensemble are tested once each
            (``retrain/folds.json``, ``retrain/ensemble.json``).
        mlflow: MLflow URI each candidate's figures are logged to (default: the one the search recorded, if any).

    Returns:
        :class:`mednas.retraining.RetrainResult` with ``candidates`` (each ``retrain/<n>/metrics.json``),
        ``fidelity`` (``summary.json["proxy_fidelity"]``) and ``summary``.

    Example:
        >>> result = mednas.api.retrain("runs/demo-xray-nodule", top_k=3)  # doctest: +SKIP
        >>> result.fidelity["kendall_tau"]  # doctest: +SKIP
    """
    from mednas.retraining import run_fold_retrain, run_retrain

    tracker = _retrain_tracker(run_dir, mlflow, study_name)  # mlflow checked before any training
    if folds is not None:
        result = run_fold_retrain(
            run_dir,
            folds=folds,
            top_k=top_k,
            epochs=epochs,
            patch=list(patch) if patch else None,
            device=device,
            storage=storage,
            study_name=study_name,
            n_resamples=n_resamples,
            show_progress=show_progress,
            threads=threads,
        )
    else:
        result = run_retrain(
            run_dir,
            top_k=top_k,
            epochs=epochs,
            patch=list(patch) if patch else None,
            device=device,
            storage=storage,
            study_name=study_name,
            n_resamples=n_resamples,
            seeds=seeds,
            show_progress=show_progress,
            threads=threads,
        )
    return _tracked_retrain(tracker, result)


def _retrain_tracker(run_dir: str | os.PathLike[str], mlflow: str | None, study_name: str | None) -> Any:
    """MLflow tracking for a retrain: ``mlflow``, else the URI the search recorded (off when there is neither)."""
    from mednas.tracking import open_run_tracker

    return open_run_tracker(run_dir, mlflow, study_name=study_name)


def _tracked_retrain(tracker: Any, result: RetrainResult) -> RetrainResult:
    """Log each retrained candidate (and a fold ensemble) as an MLflow run when tracking is on; return ``result``."""
    tracker.log_retrained(result.candidates, getattr(result, "ensemble", None))
    return result


def calibrate_proxy(
    task: str | os.PathLike[str] | TaskConfig | dict[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    run_dir: str | os.PathLike[str] | None = None,
    n_specs: int = 8,
    grid: Sequence[tuple[float, int]] | str | None = None,
    min_tau: float = 0.6,
    full_epochs: int | None = None,
    full_seeds: int = 1,
    proxy_seeds: int = 1,
    device: str | None = None,
    show_progress: bool = True,
    threads: int | None = None,
) -> CalibrationResult:
    """Train random specs at a grid of proxy settings and at full fidelity; recommend the cheapest good proxy.

    Args:
        task: Task file, mapping or config.
        presets: Preset files/names merged under the task.
        overrides: ``key=value`` overrides.
        run_dir: Where ``calibration.json`` goes (default ``runs/<task name>-calibration``).
        n_specs: Random specs to train.
        grid: ``(scale, epochs)`` pairs or ``"0.25x2,0.5x5"`` (default: scales 0.25, 0.5 x epochs 2, 5; the
            task's own proxy is always added).
        min_tau: Kendall tau the recommended setting must reach.
        full_epochs: Maximum full-fidelity epochs (default: ``training.epochs``).
        full_seeds: Full-fidelity trainings per spec with different seeds (2 or more measure the seed-noise ceiling).
        proxy_seeds: Trainings per spec at each proxy setting (2 or more rank by the proxy seed mean).
        device: ``auto``, ``cpu``, ``cuda``.
        show_progress: Progress bar on stderr.
        threads: CPU threads (default: the task's ``training.threads``, else the CPUs this process may use, fewer
            when the machine is busy at start).

    Returns:
        :class:`mednas.retraining.CalibrationResult` with ``run_dir`` and ``record`` (``calibration.json``).

    Example:
        >>> result = mednas.api.calibrate_proxy("tasks/demo-xray-nodule.yaml", n_specs=6)  # doctest: +SKIP
        >>> result.record["recommendation"]["message"]  # doctest: +SKIP
    """
    from mednas.retraining import calibrate_proxy as run_calibration
    from mednas.retraining import parse_grid

    cfg = load_config(task, presets=presets, overrides=overrides)
    if isinstance(grid, str):
        grid = parse_grid(grid)
    configure_threads(threads, task_threads=cfg.training.threads)
    return run_calibration(
        cfg,
        run_dir if run_dir is not None else Path("runs") / f"{cfg.name}-calibration",
        n_specs=n_specs,
        grid=grid,
        min_tau=min_tau,
        full_epochs=full_epochs,
        full_seeds=full_seeds,
        proxy_seeds=proxy_seeds,
        device=device,
        show_progress=show_progress,
    )


def export(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    formats: str | Sequence[str] | None = None,
    schema: str | os.PathLike[str] | None = None,
    license_file: str | os.PathLike[str] | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    quantize: str | None = None,
    calibration_images: int = 64,
    int8_tolerance: float = 0.01,
    ensemble: bool = False,
    mlflow: str | None = None,
) -> ExportResult:
    """Export the run's best candidate as a verified MONAI bundle (atomically; nothing is written on failure).

    The source is the best retrained candidate, or, where none was retrained, the best proxy candidate, which
    the metadata, model card, summary and CLI output flag as "proxy candidate, not retrained".

    Args:
        run_dir: Run directory of a search (and, ideally, a retrain).
        out: Bundle folder (default ``RUN_DIR/bundle``); an earlier mednas bundle there is replaced.
        formats: ``"onnx,torchscript"`` (default), or one of them; the state dict is always written.
        schema: MONAI's ``meta_schema_20240725.json`` to check the metadata against offline (default
            ``$MEDNAS_BUNDLE_SCHEMA``; never downloaded).
        license_file: Text of the bundle's ``LICENSE``.
        sign_key: Key file to sign the bundle digest with (HMAC-SHA256, ``signature.json``; default
            ``$MEDNAS_BUNDLE_KEY`` when set).
        threads: CPU threads for torch/OpenMP/MKL (default: the CPUs this process may use, fewer when the machine is busy).
        quantize: ``"int8"``: also write ``models/model_int8.onnx`` (ONNX Runtime static quantization calibrated on
            training images; needs the onnx format), measured against the float32 model on the validation split
            (metric deltas with paired patient-bootstrap intervals, latency and size ratios, in the metadata and
            model card). It is left out when the objective drops by more than ``int8_tolerance``.
        calibration_images: Training images to calibrate the INT8 model on (at least 1; default 64).
        int8_tolerance: Largest objective drop accepted, from 0 to 1 (default 0.01).
        ensemble: Export the fold models of ``retrain(..., folds=K)`` as one bundle whose network averages their
            probabilities, with the ensemble's own operating point, calibration and test metrics beside the best
            member's (needs the torchscript format; not with ``quantize``).
        mlflow: MLflow URI the bundle is logged to, as the artifact of a run named ``export`` (default: the URI the
            search recorded, if it was tracked).

    Returns:
        :class:`mednas.bundle.ExportResult` (``path``, ``source``, ``trial``, ``conversions`` with each format's
        ``max_abs_diff``, ``checks``, ``metadata``, ``digest``: the value to pin with ``expect_digest``; ``int8``:
        the INT8 record, whose ``accepted`` is false and ``reason`` says why when the INT8 model was refused: the
        float32 bundle is complete and nothing is raised).

    Example:
        >>> result = mednas.export("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> result.conversions["onnx"]["max_abs_diff"]  # doctest: +SKIP
        4.7e-07
    """
    from mednas.bundle import export_bundle

    configure_threads(threads)
    return export_bundle(
        run_dir,
        out,
        formats=formats,
        schema=schema,
        license_file=license_file,
        sign_key=sign_key,
        quantize=quantize,
        calibration_images=calibration_images,
        int8_tolerance=int8_tolerance,
        ensemble=ensemble,
        mlflow=mlflow,
    )


def load(
    bundle: str | os.PathLike[str],
    *,
    backend: str = "torch",
    device: str = "cpu",
    expect_digest: str | None = None,
    verify_key: str | os.PathLike[str] | None = None,
) -> BundleModel:
    """Verify a bundle's checksums and load it; the returned model predicts from image paths.

    Args:
        bundle: A folder written by :func:`export`.
        backend: ``torch`` (state dict, ``weights_only=True``), ``torchscript``, ``onnx`` (ONNX Runtime) or
            ``onnx-int8`` (the INT8 model of a bundle exported with ``quantize="int8"``, in ONNX Runtime).
        device: Torch device.
        expect_digest: The digest :func:`export` reported; a bundle with any other digest is refused.
        verify_key: The key file the bundle was signed with; an unsigned or wrongly signed bundle is refused.

    Returns:
        :class:`mednas.bundle.BundleModel`: ``model(path)`` gives a :class:`mednas.bundle.Prediction` with
        ``label``, ``probabilities`` (classification) or ``mask`` (segmentation, on the input's grid and affine);
        ``model([p1, p2])`` gives a list.

    Example:
        >>> model = mednas.load("runs/demo-mri-lesion/bundle")  # doctest: +SKIP
        >>> model("scan.nii.gz").mask.affine  # doctest: +SKIP
    """
    from mednas.bundle import load_bundle

    return load_bundle(
        bundle, backend=backend, device=device, expect_digest=expect_digest, verify_key=verify_key
    )


def predict(
    bundle: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    backend: str = "torch",
    device: str = "cpu",
    expect_digest: str | None = None,
    verify_key: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    format: str = "auto",
) -> tuple[list[Prediction], list[Path]]:
    """Run a bundle on images and write the results into ``out``.

    Classification writes ``predictions.csv`` (case, probability per class, finding score, threshold, decision,
    label); segmentation writes ``<name>_seg.nii.gz`` per input (the input's shape and affine; DICOM series:
    that series' geometry) and a ``predictions.csv`` of volumes. ``format="dicom-seg"`` (DICOM inputs only)
    writes ``<name>_seg.dcm``, a DICOM Segmentation referencing the source images, instead of the NIfTI mask,
    and for classification ``<name>.json`` naming the referenced UIDs.

    Args:
        bundle: A folder written by :func:`export` (its checksums are verified first).
        inputs: DICOM series folders, NIfTI, NRRD, PNG/JPEG files.
        out: Output folder (created).
        backend: ``torch``, ``torchscript``, ``onnx`` or ``onnx-int8``.
        device: Torch device.
        expect_digest: The digest :func:`export` reported; a bundle with any other digest is refused.
        verify_key: The key file the bundle was signed with; an unsigned or wrongly signed bundle is refused.
        threads: CPU threads for torch/OpenMP/MKL (default: the CPUs this process may use, fewer when the machine is busy).
        format: ``auto`` (NIfTI masks, CSV), ``nifti`` or ``dicom-seg``.

    Returns:
        ``(predictions, files written)``.

    Raises:
        mednas.bundle.PredictionError: After writing the other cases, when a case's output was NaN or infinite
            (that case gets no label; ``failed.csv`` lists it).
        mednas.DataError: ``format="dicom-seg"`` with an input that is not DICOM (before anything is written).
    """
    from mednas.bundle import load_bundle, predict_to_dir

    configure_threads(threads)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    model = load_bundle(
        bundle, backend=backend, device=device, expect_digest=expect_digest, verify_key=verify_key
    )
    return predict_to_dir(model, items, out, format=format)


def evaluate(
    bundle: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    split: str | None = None,
    expect_digest: str | None = None,
    verify_key: str | os.PathLike[str] | None = None,
    backend: str = "torch",
    device: str = "cpu",
    n_resamples: int = 1000,
    threads: int | None = None,
) -> EvaluationResult:
    """Validate a frozen bundle on labelled data it never saw; write ``validation.json`` and ``validation.html``.

    Nothing of the run directory is needed. Every figure carries a 95% bootstrap interval over patients: AUROC,
    AUPRC (Dice and lesion metrics for segmentation), sensitivity, specificity, PPV, NPV, accuracy and balanced
    accuracy at the bundle's locked operating point, a per-class table and confusion matrix, ECE and a reliability
    diagram, subgroups by the data's own attributes, the operating point's promise checked, and how many images
    the model was trained or validated on.

    Args:
        bundle: A folder written by :func:`export` (checksums verified; digest and signature when given).
        data: A task-like YAML with a ``data:`` section, or a data file: ``.npz`` (MedMNIST), ``.json`` datalist,
            ``.csv`` sheet, or a folder.
        out: Output folder.
        split: Keep only the cases of this given split (e.g. ``test``: MedMNIST arrays, a ``split`` column).
        expect_digest: The digest :func:`export` reported; a bundle with any other digest is refused.
        verify_key: The key file the bundle was signed with.
        backend: ``torch``, ``torchscript``, ``onnx`` or ``onnx-int8``.
        device: Torch device.
        n_resamples: Bootstrap resamples over patients.
        threads: CPU threads for torch/OpenMP/MKL (default: the CPUs this process may use, fewer when the machine is busy).

    Returns:
        :class:`mednas.evaluation.EvaluationResult` (``path`` of ``validation.json``, ``html``, ``record``,
        ``failures``: cases whose output was NaN/infinite or unreadable, left out of every metric).

    Example:
        >>> result = mednas.evaluate("runs/x/bundle", "pneumoniamnist.npz", out="val/", split="test")  # doctest: +SKIP
        >>> result.record["operating_point"]["status"]  # doctest: +SKIP
        'failed'
    """
    from mednas.evaluation import evaluate_bundle

    configure_threads(threads)
    return evaluate_bundle(
        bundle,
        data,
        out=out,
        split=split,
        expect_digest=expect_digest,
        verify_key=verify_key,
        backend=backend,
        device=device,
        n_resamples=n_resamples,
    )


def report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    images: bool = True,
    n_cases: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    plotlyjs: str = "inline",
    threads: int | None = None,
) -> ReportResult:
    """Write the run's HTML report: one file that opens offline, with every figure's interval.

    Args:
        run_dir: Run directory of a search (retrain and export records are used when present).
        out: Output file (default ``RUN_DIR/report.html``).
        images: Embed pictures of validation cases with ground truth and prediction, predicted now from the kept
            weights (``False``: no weights or data are loaded).
        n_cases: Number of case pictures (default 8 for 2D, 4 for 3D).
        storage: Optuna storage URL the search used (default: ``RUN_DIR/study.db``), for parameter importances.
        study_name: Study name (default: the search's).
        plotlyjs: ``inline`` (self-contained, ~5 MB) or ``beside`` (``plotly-VERSION.min.js`` next to the file).
        threads: CPU threads for predicting the case pictures (default: the CPUs this process may use, fewer when
            the machine is busy).

    Returns:
        :class:`mednas.reporting.ReportResult` (``path``, ``figures``, ``images``, ``notes`` on what was left out and
        why, ``errors``, ``size_bytes``).

    Example:
        >>> result = mednas.api.report("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> result.path  # doctest: +SKIP
        PosixPath('runs/demo-xray-nodule/report.html')
    """
    from mednas.reporting import write_report

    if images:
        configure_threads(threads)
    return write_report(
        run_dir,
        out,
        images=images,
        n_cases=n_cases,
        storage=storage,
        study_name=study_name,
        plotlyjs=plotlyjs,
    )


def status(
    run_dir: str | os.PathLike[str],
    *,
    storage: str | None = None,
    study_name: str | None = None,
) -> dict[str, Any]:
    """Return a run's live state: trial counts, every trial, the best so far, elapsed and remaining time.

    Reads the study storage (running trials' epochs included) and the run directory; works while a search runs
    in another process. Writes nothing.

    Args:
        run_dir: Run directory of a search.
        storage: Optuna storage URL the search used (default: ``RUN_DIR/study.db``).
        study_name: Study name (default: the search's).

    Returns:
        A JSON-ready mapping (see :func:`mednas.reporting.read_status`); ``mednas.reporting.format_status`` renders it
        as ``mednas status`` prints it.

    Example:
        >>> s = mednas.api.status("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> s["counts"], s["best"]["values"]  # doctest: +SKIP
    """
    from mednas.reporting import read_status

    return read_status(run_dir, storage=storage, study_name=study_name)


def reveal_splits(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, reveal: bool = False
) -> Path:
    """Write each case's original identifier (file path, or ``file.npz:train[12]``) and split of a run.

    Opt-in and local: refused without ``reveal=True`` and for an ``out`` inside the run directory or a bundle;
    ``splits.json`` stays hashed. See :func:`mednas.data.reveal_splits`.

    Example:
        >>> mednas.api.reveal_splits("runs/x", "/secure/splits.csv", reveal=True)  # doctest: +SKIP
    """
    from mednas.data import reveal_splits as _reveal

    return _reveal(run_dir, out, reveal=reveal)
