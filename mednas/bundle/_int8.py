"""The bundle's INT8 model (``mednas export --quantize int8``), kept only when it costs little accuracy.

ONNX Runtime's static quantization of ``models/model.onnx``, calibrated on training images preprocessed as the
bundle's network receives them; then the float32 and INT8 models run on every validation case and the task's
objective, its standard metric and their paired patient-bootstrap differences, the latency ratio and the size
ratio are recorded. When the objective drops by more than the tolerance, the INT8 file leaves the bundle.
"""

from __future__ import annotations

import logging
import math
import operator
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import ConfigError, MednasError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_TOLERANCE",
    "INT8_FILE",
    "QUANTIZE_CHOICES",
    "Int8Options",
    "build_int8",
    "check_int8_options",
]

INT8_FILE = "models/model_int8.onnx"
QUANTIZE_CHOICES = ("int8",)
DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_TOLERANCE = 0.01
#: Latency of both files is timed on one thread, one image per pass (the figure an edge deployment meets).
LATENCY_THREADS = 1
POPULATION = (
    "the validation split of the search's own data (the patients this candidate was chosen on), not an "
    "external test"
)
#: Seed stream of the calibration draw (the task seed comes first), apart from every other stream of the run.
_CALIBRATION_STREAM = 0x1A78
_BATCH = 8


@dataclass(frozen=True)
class Int8Options:
    """What ``--quantize int8`` was asked with.

    Attributes:
        calibration_images: Training images to calibrate activation ranges on (fewer when the split is smaller).
        tolerance: Largest drop of the objective on validation (float32 minus INT8) the INT8 model may show.
    """

    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    tolerance: float = DEFAULT_TOLERANCE


def check_int8_options(
    quantize: str | None, formats: tuple[str, ...], calibration_images: Any, tolerance: Any
) -> Int8Options | None:
    """Return the INT8 options (``None`` without ``quantize``), refusing bad values in one line.

    Raises:
        ConfigError: An unknown ``quantize``, formats without ``onnx``, fewer than one calibration image, or a
            tolerance outside [0, 1].
    """
    if quantize is None:
        return None
    if str(quantize).strip().lower() not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize: {quantize!r} is not supported; choose int8")
    if "onnx" not in formats:
        raise ConfigError(
            f"--quantize int8 quantizes the ONNX model, but --format {','.join(formats)} leaves it out: "
            "add onnx to --format"
        )
    try:
        n = -1 if isinstance(calibration_images, bool) else operator.index(calibration_images)
    except TypeError:
        n = -1
    if n < 1:
        raise ConfigError(f"--calibration-images: expected an integer >= 1, got {calibration_images!r}")
    try:
        t = float(tolerance)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(tolerance, bool) or not 0.0 <= t <= 1.0:
        raise ConfigError(f"--int8-tolerance: expected a number from 0 to 1, got {tolerance!r}")
    return Int8Options(n, t)


def build_int8(root: Path, rd: Any, src: Any, options: Int8Options) -> dict[str, Any]:
    """Quantize ``root/models/model.onnx``, measure what it costs, and keep ``models/model_int8.onnx`` or not.

    Args:
        root: The bundle being built (``models/model.onnx`` written and checked).
        rd: The run directory (:class:`~mednas.rundir.RunDir`).
        src: The :class:`~mednas.bundle.ExportSource`.
        options: Calibration images and tolerance.

    Returns:
        The metadata's ``int8`` record (``accepted`` false and ``reason`` when the file was removed).

    Raises:
        MednasError: The run's data cannot be read, a split is empty, or quantization fails.
    """
    from mednas.runtime import quantize_int8

    t0 = time.perf_counter()
    pipeline = src.pipeline
    plan = _data_plan(rd, src)
    calibration = _calibration_inputs(plan, src, options.calibration_images)
    logger.info(
        "INT8: calibrating on %d training images (of %d asked for)",
        len(calibration),
        options.calibration_images,
    )
    info = quantize_int8(root / "models" / "model.onnx", root / INT8_FILE, calibration)
    val = plan.arrays("val", pipeline.shape)
    if not len(val):
        raise MednasError(f"{rd.root}: the run has no validation case to measure the INT8 model on")
    n_patients = len(set(val.patients))
    logger.info(
        "INT8: evaluating float32 and INT8 on %d validation cases (%d patients)", len(val), n_patients
    )
    metrics = _compare(root, src, val)
    logger.info("INT8: timing both models (ONNX Runtime, %d thread, batch 1)", LATENCY_THREADS)
    latency = _latency(root, pipeline)
    record = _record(src, info, options, calibration, val, n_patients, metrics, latency)
    if not record["accepted"]:
        (root / INT8_FILE).unlink(missing_ok=True)
        logger.info("INT8: refused, %s removed from the bundle", INT8_FILE)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


# ----------------------------------------------------------------------------------------------- data


def _data_plan(rd: Any, src: Any) -> Any:
    """The run's data plan; refused when its preprocessing is not the one the bundle records."""
    from mednas.data import plan_data, read_or_create_salt

    plan = plan_data(src.task, rd, salt=read_or_create_salt(rd))
    p = src.pipeline
    ours = (p.normalize, tuple(float(v) for v in p.ct_window))
    theirs = (plan.prep.normalize, tuple(float(v) for v in plan.prep.ct_window))
    if ours != theirs:
        raise MednasError(
            f"{rd.preprocessing}: the run's preprocessing {theirs} is not the bundle's {ours}; cannot calibrate "
            "or evaluate the INT8 model on the images the bundle would see"
        )
    return plan


def _calibration_inputs(plan: Any, src: Any, n: int) -> list[np.ndarray]:
    """``n`` training images drawn with the task seed, preprocessed and shaped as the bundle's network sees them."""
    from mednas.data import load_arrays

    cases = sorted(plan.cases("train"), key=lambda c: (c.order or c.patient, c.key))
    if not cases:
        raise MednasError("INT8 calibration needs training images; the run's training split is empty")
    rng = np.random.default_rng(np.random.SeedSequence([int(src.task.search.seed), _CALIBRATION_STREAM]))
    pick = sorted(rng.choice(len(cases), size=min(n, len(cases)), replace=False).tolist())
    data = load_arrays([cases[i] for i in pick], src.pipeline.shape, plan.prep, None)
    return [_network_view(image, src.pipeline) for image in data.images]


def _network_view(image: np.ndarray, pipeline: Any) -> np.ndarray:
    """``(1, C, *window)``: the image padded at the end to the network's window (a centre crop of one patch)."""
    x = np.asarray(image, dtype=np.float32)
    window = pipeline.window
    if pipeline.patch is not None:
        starts = [max(0, (s - w) // 2) for s, w in zip(x.shape[1:], window)]
        x = x[(slice(None), *[slice(a, a + w) for a, w in zip(starts, window)])]
    pads = [(0, 0)] + [(0, max(0, w - s)) for s, w in zip(x.shape[1:], window)]
    return np.ascontiguousarray(np.pad(x, pads)[None], dtype=np.float32)


# ------------------------------------------------------------------------------------------- evaluation


def model_outputs(path: Path, images: np.ndarray, pipeline: Any) -> np.ndarray:
    """Run an ONNX model as the bundle does (padding, inferer, temperature) on preprocessed images.

    Args:
        path: ``model.onnx`` or ``model_int8.onnx``.
        images: ``(N, C, *shape)`` preprocessed at the bundle's shape.
        pipeline: The bundle's :class:`~mednas.bundle.Pipeline`.

    Returns:
        Classification: probabilities ``(N, n_classes)``; segmentation: label maps ``(N, *shape)`` uint8.
    """
    import torch
    import torch.nn.functional as F

    from mednas.bundle._pipeline import instantiate
    from mednas.bundle._predict import _OnnxNetwork
    from mednas.runtime import ort_session

    net = _OnnxNetwork(ort_session(path))
    inferer = instantiate(*pipeline.inferer())
    shape = tuple(int(s) for s in pipeline.shape)
    outs = []
    for start in range(0, len(images), _BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + _BATCH], dtype=np.float32))
        if pipeline.patch is None:
            pads = [v for s, w in zip(reversed(shape), reversed(pipeline.window)) for v in (0, w - s)]
            x = F.pad(x, pads) if any(pads) else x
        with torch.no_grad():
            logits = inferer(x, net).float()
        if pipeline.problem == "classification":
            outs.append(torch.softmax(logits / float(pipeline.temperature or 1.0), dim=1).numpy())
        else:
            crop = (slice(None), slice(None), *[slice(0, s) for s in shape])
            outs.append(logits[crop].argmax(dim=1).to(torch.uint8).numpy())
    return np.concatenate(outs)


def _compare(root: Path, src: Any, val: Any) -> dict[str, dict[str, Any]]:
    """Both models on every validation case; per metric each value and the paired difference, with intervals."""
    pipeline = src.pipeline
    fp32 = model_outputs(root / "models" / "model.onnx", val.images, pipeline)
    int8 = model_outputs(root / INT8_FILE, val.images, pipeline)
    values = (
        _classification_fns(src.task, pipeline, fp32, int8, val.labels)
        if pipeline.problem == "classification"
        else _segmentation_fns(src.task, fp32, int8, val.labels)
    )
    return paired_bootstrap(src.task, values, val.patients)


def paired_bootstrap(task: Any, values: Any, patients: list[str]) -> dict[str, dict[str, Any]]:
    """Resample patients once; on every resample score both models: values, differences and their intervals.

    Args:
        task: The task (``objective.bootstrap`` resamples and confidence, ``search.seed``).
        values: ``values(rows) -> (float32 metrics, int8 metrics)`` on the cases ``rows``.
        patients: Patient of each case.

    Returns:
        Metric -> ``{float32, float32_ci95, int8, int8_ci95, delta, delta_ci95, n_resamples}`` (delta: INT8 minus
        float32; ``objective`` is the task's objective, higher is better).
    """
    from mednas.metrics._objective import _bootstrap_all

    def fn(rows: np.ndarray) -> dict[str, float]:
        a, b = values(rows)
        out = {f"{k}|float32": a[k] for k in a}
        out.update({f"{k}|int8": b[k] for k in a})
        out.update({f"{k}|delta": b[k] - a[k] for k in a})
        return out

    boot = task.objective.bootstrap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample with one class drawn is undefined: skipped and counted
        res = _bootstrap_all(
            fn,
            [np.arange(len(patients))],
            list(patients),
            n_resamples=int(boot.resamples),
            seed=int(task.search.seed),
            confidence=float(boot.confidence),
        )
    table: dict[str, dict[str, Any]] = {}
    for key, est in res.items():
        metric, which = key.split("|")
        row = table.setdefault(metric, {})
        row[which], row[f"{which}_ci95"] = est["value"], est["ci95"]
        row["n_resamples"] = min(row.get("n_resamples", est["n_resamples"]), est["n_resamples"])
    return table


def _classification_fns(task: Any, pipeline: Any, fp32: np.ndarray, int8: np.ndarray, labels: Any) -> Any:
    """Per-resample AUROC and objective of both models, threshold-bound terms at the bundle's threshold."""
    from mednas.metrics import _classification as C
    from mednas.metrics._objective import _classification_values, _threshold, _truth_score, combine

    labels = np.asarray(labels)
    truth, s32 = _truth_score(task, fp32, labels)
    _, s8 = _truth_score(task, int8, labels)
    both = bool(truth.any() and not truth.all())
    fixed = pipeline.threshold is not None

    def chosen(score: np.ndarray) -> float:
        if fixed:
            return float(pipeline.threshold)
        return float(_threshold(task, truth, score).threshold) if both else math.nan

    thresholds = (chosen(s32), chosen(s8))

    def one(rows: np.ndarray, score: np.ndarray, thr: float) -> dict[str, float]:
        t, s = truth[rows], score[rows]
        v = _classification_values(task, t, s, thr, full=False, fixed=fixed)
        auroc = C.auroc(t, s) if t.any() and not t.all() else math.nan
        return {"auroc": auroc, "objective": combine(task, v)}

    return lambda rows: (one(rows, s32, thresholds[0]), one(rows, s8, thresholds[1]))


def _segmentation_fns(task: Any, fp32: np.ndarray, int8: np.ndarray, labels: Any) -> Any:
    """Per-resample Dice and objective of both models from per-case statistics computed once."""
    from mednas.metrics._objective import (
        _lesion_overlap,
        _segmentation_inputs,
        _segmentation_terms,
        _segmentation_values,
        combine,
        segmentation_case_stats,
    )

    labels = np.asarray(labels)
    overlap = _lesion_overlap(task)
    terms = _segmentation_terms(task)
    stats = [segmentation_case_stats(task, out, labels, overlap) for out in (fp32, int8)]

    def one(rows: np.ndarray, outputs: np.ndarray, st: np.ndarray) -> dict[str, float]:
        v = _segmentation_values(terms, _segmentation_inputs(task, outputs, labels, st[rows], rows))
        return {"dice": v["dice"], "objective": combine(task, v)}

    return lambda rows: (one(rows, fp32, stats[0]), one(rows, int8, stats[1]))


# ------------------------------------------------------------------------------------------------ record


def _latency(root: Path, pipeline: Any) -> dict[str, Any]:
    """Median latency of both files on one thread, batch 1, at the network's input shape; fp32 over INT8."""
    from mednas.runtime import cpu_name, measure_onnx_file

    shape = (int(pipeline.in_channels), *[int(w) for w in pipeline.window])
    fp32 = measure_onnx_file(root / "models" / "model.onnx", shape, precision="fp32", threads=LATENCY_THREADS)
    int8 = measure_onnx_file(root / INT8_FILE, shape, precision="int8", threads=LATENCY_THREADS)
    return {
        "float32": fp32.to_dict(),
        "int8": int8.to_dict(),
        "ratio": round(fp32.median_ms / max(int8.median_ms, 1e-9), 3),
        "threads": LATENCY_THREADS,
        "batch": 1,
        "runtime": "onnxruntime",
        "hardware": cpu_name(),
        "note": "ratio = float32 median / INT8 median: above 1 the INT8 model is faster",
    }


def _record(
    src: Any,
    info: Any,
    options: Int8Options,
    calibration: list[np.ndarray],
    val: Any,
    n_patients: int,
    metrics: dict[str, dict[str, Any]],
    latency: dict[str, Any],
) -> dict[str, Any]:
    """The metadata's ``int8`` record, with the decision and its reason."""
    task = src.task
    obj = metrics["objective"]
    drop = (
        obj["float32"] - obj["int8"]
        if obj.get("float32") is not None and obj.get("int8") is not None
        else None
    )
    name = task.objective.name
    if drop is None:
        reason = (
            f"the objective ({name}) is undefined on the validation split ({n_patients} patients), so the INT8 "
            "model's accuracy cannot be checked"
        )
    elif drop > options.tolerance:
        reason = (
            f"the objective ({name}) drops by {drop:.4g} on the validation split ({n_patients} patients), more "
            f"than the tolerance {options.tolerance:g}"
        )
    else:
        reason = None
    boot = task.objective.bootstrap
    return {
        "file": INT8_FILE if reason is None else None,
        "method": info.method,
        "calibration": {
            "split": "train",
            "n_images": len(calibration),
            "requested": options.calibration_images,
            "seed": int(task.search.seed),
            "input_shape": list(calibration[0].shape[1:]),
            "preprocessing": "the data plan's, at the bundle's input shape (as the network receives it)",
            "seconds": round(float(info.seconds), 2),
        },
        "evaluated_on": {
            "split": "validation",
            "n_cases": len(val),
            "n_patients": n_patients,
            "population": POPULATION,
        },
        "metrics": metrics,
        "objective": name,
        "objective_drop": drop,
        "tolerance": options.tolerance,
        "accepted": reason is None,
        "reason": reason,
        "bootstrap": {
            "unit": "patient",
            "paired": True,
            "n_resamples": int(boot.resamples),
            "confidence": float(boot.confidence),
            "seed": int(task.search.seed),
            "delta": "INT8 minus float32, from the same patient resamples",
        },
        "threshold": (
            "threshold-bound metrics at the bundle's operating threshold (chosen on validation for the float32 "
            "model) for both models"
            if src.pipeline.problem == "classification" and src.pipeline.threshold is not None
            else "threshold-bound metrics at each model's threshold chosen on validation by the task's rule"
            if src.pipeline.problem == "classification"
            else None
        ),
        "latency": latency,
        "size": {
            "float32_bytes": int(info.float_bytes),
            "int8_bytes": int(info.int8_bytes),
            "ratio": round(float(info.size_ratio), 3),
        },
    }
