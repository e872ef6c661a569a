"""Tiny synthetic datasets and tasks for fast tests: a few dozen small images with known labels.

These are toys for exercising the machinery (a bright blob means "finding"), not the demo data; everything
written here is marked simulated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tiny_classification_data", "tiny_segmentation_data", "tiny_task"]


def _blob(shape: tuple[int, ...], center: np.ndarray, radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, center))
    return d2 <= radius**2


def tiny_classification_data(
    root: str | Path, *, n: int = 32, size: int = 32, seed: int = 0, patients_per_case: float = 0.75
) -> Path:
    """Write ``n`` 2D PNG images (half with a bright disc: class 1) and a MONAI datalist; return its path.

    Several images share a patient so that patient-grouped splits are exercised.
    """
    from skimage import io as skio

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_patients = max(3, int(round(n * patients_per_case)))
    entries = []
    for i in range(n):
        label = i % 2
        img = rng.normal(0.3, 0.08, size=(size, size))
        if label:
            center = rng.uniform(size * 0.25, size * 0.75, size=2)
            img[_blob((size, size), center, size * 0.12)] += 0.5
        arr = np.clip(img * 65535, 0, 65535).astype(np.uint16)
        name = f"images/img_{i:03d}.png"
        skio.imsave(root / name, arr, check_contrast=False)
        entries.append({"image": name, "label": label, "patient": f"toy-{i % n_patients:03d}"})
    datalist = {"name": "tiny-classification", "simulated": True, "modality": "OT", "training": entries}
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def tiny_segmentation_data(root: str | Path, *, n: int = 10, size: int = 24, seed: int = 0) -> Path:
    """Write ``n`` 3D NIfTI volumes with 0-2 bright spheres each and their masks; return the datalist path."""
    import nibabel as nib

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-size, -size, -size]
    entries = []
    shape = (size, size, size)
    for i in range(n):
        img = rng.normal(100, 10, size=shape).astype(np.float32)
        mask = np.zeros(shape, dtype=np.uint8)
        for _ in range(int(rng.integers(0 if i % 3 else 1, 3))):
            center = rng.uniform(size * 0.25, size * 0.75, size=3)
            blob = _blob(shape, center, float(rng.uniform(2.0, 4.0)))
            img[blob] += 80
            mask[blob] = 1
        nib.save(nib.Nifti1Image(img, affine), root / f"images/vol_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / f"labels/vol_{i:03d}.nii.gz")
        entries.append(
            {
                "image": f"images/vol_{i:03d}.nii.gz",
                "label": f"labels/vol_{i:03d}.nii.gz",
                "patient": f"toy-{i:03d}",
            }
        )
    datalist = {"name": "tiny-segmentation", "simulated": True, "modality": "MR", "training": entries}
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def tiny_task(kind: str, datalist: str | Path, **overrides: Any) -> dict[str, Any]:
    """Return a task mapping over a tiny dataset with a budget of seconds (for ``mednas.api.search``).

    Args:
        kind: ``"classification"`` or ``"segmentation"``.
        datalist: Path from :func:`tiny_classification_data` / :func:`tiny_segmentation_data`.
        **overrides: Top-level sections: ``objective`` replaces the default objective; other mappings merge
            shallowly into their section.
    """
    from mednas.testing._conformance import TINY_OPTIONS as OPTIONS

    if kind == "classification":
        task: dict[str, Any] = {
            "name": "tiny-cls",
            "problem": "classification",
            "spatial_dims": 2,
            "data": {"format": "datalist", "path": str(datalist)},
            "labels": {"names": ["normal", "finding"]},
            "objective": {"metric": "sensitivity_at_specificity", "min_specificity": 0.8},
            "search": {
                "spaces": ["resnet", "efficientnet"],
                "n_trials": 3,
                "seed": 0,
                "space_options": {k: OPTIONS[k] for k in ("resnet", "efficientnet")},
                "pruner": {"name": "median", "startup_trials": 1, "warmup_epochs": 0},
            },
            "proxy": {"shape": [16, 16], "epochs": 2},
            "training": {"shape": [32, 32], "batch_size": 8, "epochs": 3, "augment": False},
        }
    else:
        task = {
            "name": "tiny-seg",
            "problem": "segmentation",
            "spatial_dims": 3,
            "data": {"format": "datalist", "path": str(datalist)},
            "labels": {"names": ["background", "lesion"]},
            "objective": {
                "terms": [{"metric": "dice", "weight": 0.5}, {"metric": "lesion_sensitivity", "weight": 0.5}]
            },
            "search": {
                "spaces": ["unet", "segresnet"],
                "n_trials": 2,
                "seed": 0,
                "space_options": {k: OPTIONS[k] for k in ("unet", "segresnet")},
            },
            "proxy": {"shape": [16, 16, 16], "epochs": 2},
            "training": {"shape": [24, 24, 24], "batch_size": 2, "epochs": 3, "augment": False},
        }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(task.get(key), dict) and key != "objective":
            task[key] = {**task[key], **value}
        else:
            task[key] = value
    return task
