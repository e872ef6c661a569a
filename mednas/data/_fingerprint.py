"""The data fingerprint: per-case geometry and intensities, class balance, and what they suggest.

Like nnU-Net's fingerprint -> plan step: shapes and spacings suggest the full and proxy input shapes, the
modality and intensities suggest the normalisation; the task may accept or override each suggestion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mednas.data._cases import Case, Dataset
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "compute_fingerprint",
    "describe_case",
    "fingerprint_hash",
    "pixel_hash",
    "suggest_normalize",
    "suggest_shapes",
]


def _percentiles(values: np.ndarray) -> dict[str, float]:
    return {
        "p00_5": float(np.percentile(values, 0.5)),
        "p50": float(np.percentile(values, 50)),
        "p99_5": float(np.percentile(values, 99.5)),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def _modality_code(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    if not text:
        return None
    return "MR" if text in ("MRI", "MR") else text


def pixel_hash(array: np.ndarray) -> str:
    """Return a digest of an image's decoded pixels (shape, dtype and values), to find exact duplicates.

    Equal digests mean the same pixel content whatever the file name or format; it names no patient.
    """
    arr = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.data)
    return h.hexdigest()


def describe_case(
    case: Case,
    image: Any,
    *,
    label: np.ndarray | None = None,
    n_classes: int = 2,
    channels: int | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """Summarise one case that has already been read (so validation and fingerprint share one pass).

    Args:
        case: The case (its salted ``key`` and ``patient`` name the record).
        image: The first channel's :class:`~mednas.io.MedImage`.
        label: The segmentation label map ``(*spatial)`` with class indices, or ``None``.
        n_classes: Number of classes.
        channels: Total input channels of the case (default: the image's).
        modality: Modality to use when neither the image nor the case states one (the layout's).

    Returns:
        Shape, spacing, orientation, dtype, modality, intensity percentiles inside the foreground (voxels above
        the 5th percentile, and for segmentation inside the label), and label counts. No paths, no raw IDs.
    """
    arr = image.array
    fg = arr[arr > np.percentile(arr, 5)] if arr.size else arr
    if fg.size == 0:
        fg = arr.ravel()
    rec: dict[str, Any] = {
        "case": case.key,
        "patient": case.patient,
        "shape": list(image.spatial_shape),
        "spacing": [round(s, 4) for s in image.spacing],
        "orientation": image.orientation,
        "channels": channels if channels is not None else image.channels,
        "dtype": str(arr.dtype),
        "modality": _modality_code(image.meta.get("modality") or case.extra.get("modality") or modality),
        "intensity": {"min": float(arr.min()), "max": float(arr.max()), **_percentiles(fg)},
        "pixels": pixel_hash(arr),
    }
    if label is not None:
        from scipy import ndimage

        lab = np.round(label).astype(np.int64)
        counts = np.bincount(np.clip(lab.ravel(), 0, None), minlength=n_classes)
        rec["label_voxels"] = counts.tolist()
        fgmask = lab > 0
        rec["n_components"] = int(ndimage.label(fgmask)[1]) if fgmask.any() else 0
        rec["foreground_fraction"] = float(fgmask.mean()) if fgmask.size else 0.0
        if fgmask.any() and fgmask.shape == arr.shape[1:]:
            rec["intensity_in_label"] = _percentiles(arr[0][fgmask])
    elif isinstance(case.label, int):
        rec["label"] = case.label
    return rec


def _case_record(case: Case, problem: str, n_classes: int, modality: str | None = None) -> dict[str, Any]:
    from mednas.io import read_image

    img = read_image(case.images[0])
    label = None
    if problem == "segmentation" and isinstance(case.label, str):
        label = read_image(case.label).array[0]
        if tuple(label.shape) != tuple(img.spatial_shape):
            raise DataError(
                f"{case.label}: label shape {list(label.shape)} differs from image shape {list(img.spatial_shape)}"
            )
    return describe_case(
        case,
        img,
        label=label,
        n_classes=n_classes,
        channels=img.channels + len(case.images) - 1,
        modality=modality,
    )


def suggest_normalize(modality: str | None, intensity_min: float) -> str:
    """Suggest the intensity normalisation: CT -> HU window, MR -> z-score on the foreground, else percentiles."""
    mod = (modality or "").upper()
    if mod == "CT" or (not mod and intensity_min <= -900):
        return "ct"
    if mod in ("MR", "MRI", "PT"):
        return "zscore"
    return "percentile"


def suggest_shapes(
    median_shape: Sequence[int], spatial_dims: int, median_spacing: Sequence[float] | None = None
) -> dict[str, list[int]]:
    """Suggest full and proxy shapes from the median case; never enlarge an axis.

    Full = the median shape when it fits in 128^3 voxels (3D) or 256^2 pixels (2D) (training pads each input to
    what the network needs, so no rounding is necessary); a larger median is shrunk (towards isotropic voxels
    when the spacing is known) to fit and rounded down to a multiple of 8. Proxy = half the full shape rounded to
    a multiple of 8, at least 16 per axis, at most the full shape.
    """
    shape = np.asarray(median_shape[:spatial_dims], dtype=float)
    budget = float(128**3 if spatial_dims == 3 else 256**2)
    if np.prod(shape) <= budget:
        full = [int(s) for s in shape]
    else:
        if median_spacing is not None and len(median_spacing) >= spatial_dims:
            extent = shape * np.asarray(median_spacing[:spatial_dims], dtype=float)
            target = np.minimum(shape, extent / (np.prod(extent) / budget) ** (1.0 / spatial_dims))
            if np.prod(target) < budget:  # axes capped at their own size leave room for the others
                free = target < shape
                if free.any():
                    grow = (budget / np.prod(target)) ** (1.0 / int(free.sum()))
                    target = np.where(free, np.minimum(shape, target * grow), target)
        else:
            target = shape * (budget / np.prod(shape)) ** (1.0 / spatial_dims)
        full = [int(t) if t < 8 else int(t // 8) * 8 for t in target]
    full = [max(1, f) for f in full]
    proxy = [min(f, max(16, int(round(f / 2 / 8.0)) * 8)) for f in full]
    return {"full": full, "proxy": proxy}


def compute_fingerprint(
    dataset: Dataset,
    *,
    problem: str,
    spatial_dims: int,
    label_names: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
    records: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Summarise every case: geometry, intensities, class balance, label sanity, and what they suggest.

    Args:
        dataset: The cases.
        problem: ``classification`` or ``segmentation``.
        spatial_dims: 2 or 3.
        label_names: Class names.
        progress: ``(done, total)`` callback while reading.
        records: Per-case records made by :func:`describe_case` in an earlier pass (validation); when given, no
            case is read again.

    Returns:
        ``{"cases": [...], "summary": {...}, "suggestions": {...}, "simulated": bool, "hash": str}`` (and
        ``"augmentation"`` when the cases include augmented copies). Case records name cases and patients only by
        their salted keys.

    Raises:
        DataError: For the first unreadable case (use ``mednas validate`` to list all of them).
    """
    if records is None:
        records = []
        for i, case in enumerate(dataset.cases):
            records.append(_case_record(case, problem, len(label_names), dataset.modality))
            if progress:
                progress(i + 1, len(dataset.cases))
    records = list(records)
    if not records:
        raise DataError("the dataset has no cases")
    summary = _geometry_summary(records, spatial_dims, dataset.modality)
    if problem == "classification":
        summary.update(_class_summary(records, label_names))
    else:
        summary.update(_label_summary(records, label_names))
    suggestions = _suggestions(summary, spatial_dims)
    out: dict[str, Any] = {
        "cases": records,
        "summary": summary,
        "suggestions": suggestions,
        "simulated": dataset.simulated,
    }
    if dataset.augmentation:
        out["augmentation"] = dataset.augmentation
    out["hash"] = fingerprint_hash(out)
    return out


def _geometry_summary(
    records: list[dict[str, Any]], spatial_dims: int, modality_default: str | None
) -> dict[str, Any]:
    """The dataset's shapes, spacings, modality, orientations and intensities over all case records."""
    shapes = np.array([r["shape"][:spatial_dims] for r in records])
    spacings = np.array([r["spacing"][:spatial_dims] for r in records])
    modalities = Counter(str(r["modality"] or modality_default or "unknown") for r in records)
    modality = modalities.most_common(1)[0][0]
    if modality == "unknown" and modality_default:
        modality = modality_default
    return {
        "n_cases": len(records),
        "n_patients": len({r["patient"] for r in records}),
        "median_shape": [int(v) for v in np.median(shapes, axis=0)],
        "min_shape": shapes.min(axis=0).tolist(),
        "max_shape": shapes.max(axis=0).tolist(),
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "min_spacing": spacings.min(axis=0).tolist(),
        "max_spacing": spacings.max(axis=0).tolist(),
        "modality": modality,
        "modalities": dict(modalities),
        "orientations": dict(Counter(r["orientation"] for r in records)),
        "intensity_min": float(min(r["intensity"]["min"] for r in records)),
        "intensity_max": float(max(r["intensity"]["max"] for r in records)),
        "intensity_foreground": {
            k: float(np.median([r["intensity"][k] for r in records]))
            for k in ("p00_5", "p50", "p99_5", "mean", "std")
        },
    }


def _class_summary(records: list[dict[str, Any]], label_names: Sequence[str]) -> dict[str, Any]:
    """Classification: cases per class, their fractions, and how many cases have no label."""
    counts = Counter(r.get("label") for r in records)
    class_counts = {label_names[k]: int(counts.get(k, 0)) for k in range(len(label_names))}
    return {
        "class_counts": class_counts,
        "class_fraction": {n: round(c / len(records), 4) for n, c in class_counts.items()},
        "label_sanity": {"unlabelled_cases": int(sum(1 for r in records if r.get("label") is None))},
    }


def _label_summary(records: list[dict[str, Any]], label_names: Sequence[str]) -> dict[str, Any]:
    """Segmentation: voxels per label, cases with findings, components, and intensities inside the labels."""
    out: dict[str, Any] = {}
    totals = np.sum(
        [r.get("label_voxels", [0] * len(label_names))[: len(label_names)] for r in records], axis=0
    )
    out["label_voxels"] = {label_names[k]: int(totals[k]) for k in range(len(label_names))}
    total = max(int(totals.sum()), 1)
    out["label_fraction"] = {
        label_names[k]: round(int(totals[k]) / total, 6) for k in range(len(label_names))
    }
    with_finding = [r for r in records if sum(r.get("label_voxels", [0])[1:]) > 0]
    out["cases_with_finding"] = len(with_finding)
    out["components_per_case"] = float(np.mean([r.get("n_components", 0) for r in records]))
    present = Counter(k for r in records for k, v in enumerate(r.get("label_voxels", [])) if v > 0)
    out["label_sanity"] = {
        "all_background_cases": len(records) - len(with_finding),
        "cases_per_class": {label_names[k]: int(present.get(k, 0)) for k in range(len(label_names))},
        "median_foreground_fraction": float(np.median([r.get("foreground_fraction", 0.0) for r in records])),
    }
    in_label = [r["intensity_in_label"] for r in records if "intensity_in_label" in r]
    if in_label:
        out["intensity_in_label"] = {
            k: float(np.median([v[k] for v in in_label])) for k in ("p00_5", "p50", "p99_5", "mean", "std")
        }
    return out


def _suggestions(summary: dict[str, Any], spatial_dims: int) -> dict[str, Any]:
    """What the summary suggests: the normalisation (and why), network shapes, and a CT window."""
    modality = summary["modality"]
    norm_modality = None if modality == "unknown" else modality
    normalize = suggest_normalize(norm_modality, summary["intensity_min"])
    suggestions: dict[str, Any] = {
        "normalize": normalize,
        "normalize_reason": _normalize_reason(normalize, norm_modality),
        **suggest_shapes(summary["median_shape"], spatial_dims, summary["median_spacing"]),
    }
    if normalize == "ct":
        source = summary.get("intensity_in_label") or summary["intensity_foreground"]
        suggestions["ct_window"] = [float(np.floor(source["p00_5"])), float(np.ceil(source["p99_5"]))]
    return suggestions


def _normalize_reason(normalize: str, modality: str | None) -> str:
    if normalize == "ct":
        return (
            f"modality {modality}: clip to an HU window, scale to 0-1"
            if modality
            else "values reach -900 or below (CT-like): HU window"
        )
    if normalize == "zscore":
        return (
            f"modality {modality}: z-score over the non-zero voxels (MONAI NormalizeIntensity, nonzero=True)"
        )
    return f"modality {modality or 'unknown'}: 0.5-99.5 percentile range to 0-1"


def fingerprint_hash(fp: dict[str, Any]) -> str:
    """Hash of the fingerprint's case records (geometry, intensities, labels)."""
    payload = json.dumps(fp.get("cases", []), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
