"""Small files for the data tests: volumes with a lesion, masks, PNGs, DICOM, and task mappings over them."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mednas.config import TaskConfig, load_task
from mednas.io import MedImage, write_nifti
from mednas.testing import TINY_OPTIONS

AFFINE = np.array([[1.5, 0, 0, -10.0], [0, 1.5, 0, 5.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1.0]])


def volume(
    shape: Sequence[int] = (12, 11, 6), *, seed: int = 0, lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """An int16 MR-like volume ``(1, *shape)`` and its uint8 mask ``(1, *shape)`` (a bright box, or none)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(200, 20, size=(1, *shape)).round().astype(np.int16)
    mask = np.zeros((1, *shape), dtype=np.uint8)
    if lesion:
        lo = [max(1, s // 3) for s in shape]
        box = (0, *[slice(a, a + max(2, s // 4)) for a, s in zip(lo, shape)])
        mask[box] = 1
        image[box] += 300
    return image, mask


def seg_case(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    lesion: bool = True,
    shape: Sequence[int] = (12, 11, 6),
    affine: np.ndarray = AFFINE,
) -> tuple[Path, Path]:
    """Write ``images/<name>.nii.gz`` and ``labels/<name>.nii.gz``; return both paths."""
    image, mask = volume(shape, seed=seed, lesion=lesion)
    img_path = write_nifti(MedImage(image, affine), root / "images" / f"{name}.nii.gz")
    lab_path = write_nifti(MedImage(mask, affine), root / "labels" / f"{name}.nii.gz")
    return img_path, lab_path


def png(path: Path, *, seed: int = 0, size: int = 16, bright: bool = False) -> Path:
    """Write a small grey PNG."""
    from skimage import io as skio

    rng = np.random.default_rng(seed)
    pixels = rng.integers(20, 120, size=(size, size)).astype(np.uint8)
    if bright:
        pixels[4:9, 5:10] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, pixels, check_contrast=False)
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write a CSV sheet with a header row."""
    columns = list(columns or rows[0].keys())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    return path


def seg_task(
    data: dict[str, Any], *, names: Sequence[str] = ("background", "lesion"), **sections: Any
) -> dict[str, Any]:
    """A tiny 3D segmentation task mapping over ``data`` (proxy 16^3, one epoch, UNet only)."""
    task: dict[str, Any] = {
        "name": "data-test-seg",
        "problem": "segmentation",
        "spatial_dims": 3,
        "data": data,
        "labels": {"names": list(names)},
        "objective": {"metric": "dice"},
        "search": {
            "spaces": ["unet"],
            "n_trials": 2,
            "seed": 0,
            "space_options": {"unet": TINY_OPTIONS["unet"]},
            "pruner": "none",
        },
        "proxy": {"shape": [16, 16, 16], "epochs": 1},
        "training": {"shape": [16, 16, 16], "batch_size": 2, "epochs": 1, "augment": False},
    }
    task.update(sections)
    return task


def cls_task(
    data: dict[str, Any], *, names: Sequence[str] = ("normal", "nodule"), **sections: Any
) -> dict[str, Any]:
    """A tiny 2D classification task mapping over ``data``."""
    task: dict[str, Any] = {
        "name": "data-test-cls",
        "problem": "classification",
        "spatial_dims": 2,
        "data": data,
        "labels": {"names": list(names)},
        "objective": {"metric": "auroc"},
        "search": {
            "spaces": ["resnet"],
            "n_trials": 2,
            "seed": 0,
            "space_options": {"resnet": TINY_OPTIONS["resnet"]},
            "pruner": "none",
        },
        "proxy": {"shape": [16, 16], "epochs": 1},
        "training": {"shape": [16, 16], "batch_size": 8, "epochs": 1, "augment": False},
    }
    task.update(sections)
    return task


def config(task: dict[str, Any], *overrides: str) -> TaskConfig:
    """Validate a task mapping (paths absolute already)."""
    return load_task(task, overrides=overrides)
