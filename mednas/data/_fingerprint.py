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

__all__ = ["compute_fingerprint", "fingerprint_hash", "suggest_normalize", "suggest_shapes"]


def _case_record(case: Case, problem: str, n_classes: int) -> dict[str, Any]:
    from mednas.io import read_image

    img = read_image(case.images[0])
    arr = img.array
    fg = arr[arr > np.percentile(arr, 5)] if arr.size else arr
    if fg.size == 0:
        fg = arr.ravel()
    rec: dict[str, Any] = {
        "case": case.key,
        "patient": case.patient,
        "shape": list(img.spatial_shape),
        "spacing": [round(s, 4) for s in img.spacing],
        "orientation": img.orientation,
        "channels": img.channels + len(case.images) - 1,
        "modality": img.meta.get("modality"),
        "intensity": {
            "min": float(arr.min()),
            "max": float(arr.max()),
            "p00_5": float(np.percentile(fg, 0.5)),
            "p50": float(np.percentile(fg, 50)),
            "p99_5": float(np.percentile(fg, 99.5)),
            "mean": float(fg.mean()),
            "std": float(fg.std()),
        },
    }
    if problem == "segmentation" and isinstance(case.label, str):
        from scipy import ndimage

        lab = read_image(case.label).array[0]
        counts = np.bincount(np.clip(np.round(lab).astype(np.int64).ravel(), 0, None), minlength=n_classes)
        rec["label_voxels"] = counts.tolist()
        fgmask = lab > 0
        rec["n_components"] = int(ndimage.label(fgmask)[1]) if fgmask.any() else 0
        if tuple(lab.shape) != tuple(arr.shape[1:]):
            rec["problem"] = "label shape differs from image shape"
    elif isinstance(case.label, int):
        rec["label"] = case.label
    return rec


def suggest_normalize(modality: str | None, intensity_min: float) -> str:
    """Suggest the intensity normalisation: CT -> HU window, MR -> z-score on the foreground, else percentiles."""
    mod = (modality or "").upper()
    if mod == "CT" or (not mod and intensity_min <= -900):
        return "ct"
    if mod in ("MR", "MRI", "PT"):
        return "zscore"
    return "percentile"


def suggest_shapes(median_shape: Sequence[int], spatial_dims: int) -> dict[str, list[int]]:
    """Suggest full and proxy shapes: full = median shape rounded to a multiple of 16; proxy = half of it."""
    full = [max(16, int(round(s / 16.0)) * 16) for s in median_shape[:spatial_dims]]
    proxy = [max(16, int(round(s / 2 / 8.0)) * 8) for s in full]
    return {"full": full, "proxy": proxy}


def compute_fingerprint(
    dataset: Dataset,
    *,
    problem: str,
    spatial_dims: int,
    label_names: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Read every case once and summarise it.

    Returns:
        ``{"cases": [...], "summary": {...}, "suggestions": {...}, "simulated": bool, "hash": str}``. Case
        records name cases and patients only by their salted keys.

    Raises:
        DataError: For the first unreadable case (use ``mednas validate`` to list all of them).
    """
    records = []
    for i, case in enumerate(dataset.cases):
        records.append(_case_record(case, problem, len(label_names)))
        if progress:
            progress(i + 1, len(dataset.cases))
    if not records:
        raise DataError("the dataset has no cases")
    shapes = np.array([r["shape"][:spatial_dims] for r in records])
    spacings = np.array([r["spacing"][:spatial_dims] for r in records])
    modalities = Counter(str(r["modality"] or dataset.modality or "unknown") for r in records)
    modality = modalities.most_common(1)[0][0]
    if modality == "unknown" and dataset.modality:
        modality = dataset.modality
    median_shape = [int(v) for v in np.median(shapes, axis=0)]
    summary: dict[str, Any] = {
        "n_cases": len(records),
        "n_patients": len({r["patient"] for r in records}),
        "median_shape": median_shape,
        "min_shape": shapes.min(axis=0).tolist(),
        "max_shape": shapes.max(axis=0).tolist(),
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "modality": modality,
        "orientations": dict(Counter(r["orientation"] for r in records)),
        "intensity_min": float(min(r["intensity"]["min"] for r in records)),
        "intensity_max": float(max(r["intensity"]["max"] for r in records)),
    }
    if problem == "classification":
        counts = Counter(r.get("label") for r in records)
        summary["class_counts"] = {label_names[k]: int(counts.get(k, 0)) for k in range(len(label_names))}
    else:
        totals = np.sum([r.get("label_voxels", [0] * len(label_names)) for r in records], axis=0)
        summary["label_voxels"] = {label_names[k]: int(totals[k]) for k in range(len(label_names))}
        summary["cases_with_finding"] = int(sum(1 for r in records if sum(r.get("label_voxels", [0])[1:]) > 0))
        summary["components_per_case"] = float(np.mean([r.get("n_components", 0) for r in records]))
    suggestions = {
        "normalize": suggest_normalize(None if modality == "unknown" else modality, summary["intensity_min"]),
        **suggest_shapes(median_shape, spatial_dims),
    }
    out = {"cases": records, "summary": summary, "suggestions": suggestions, "simulated": dataset.simulated}
    out["hash"] = fingerprint_hash(out)
    return out


def fingerprint_hash(fp: dict[str, Any]) -> str:
    """Hash of the fingerprint's case records (geometry, intensities, labels)."""
    payload = json.dumps(fp.get("cases", []), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
