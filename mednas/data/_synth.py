"""Derived cases: binarised masks (``data.label_threshold``) and augmented copies (``data.augment_copies``).

Some real datasets have one to three subjects (Colin27, the pyradiomics cases); training sets are then made of
augmented copies. They are made once, deterministically from ``data.seed``, into the cache (content-hash keyed,
atomic), so every later step reads ordinary NIfTI files, and the dataset says everywhere that they are copies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mednas.config import TaskConfig
from mednas.data._cases import Case, Dataset, default_cache_root, hash_id, order_key
from mednas.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["AUGMENTATION_NOTE", "synthesise"]

#: Bump when the synthesis changes what it writes, so stale cache folders are not used.
SYNTH_VERSION = 1

AUGMENTATION_NOTE = (
    "training, validation and test cases include augmented copies of {n_sources} source case(s) from "
    "{n_patients} patient(s); {grouping}"
)


def synthesise(dataset: Dataset, task: TaskConfig, salt: str, *, cache_root: Path | None = None) -> Dataset:
    """Replace each case by its derived files: the (resampled, binarised) original plus ``augment_copies`` copies.

    Copies are made with MONAI transforms: a random affine with elastic deformation (image bilinear, mask nearest),
    for non-CT images a random bias field, and Gaussian noise scaled to the image's intensity range. With
    ``data.augment_group: patient`` every copy keeps its source's patient (honest splits, at least 3 patients
    needed); with ``copy`` each copy is its own split unit, so the splits measure robustness to augmentation, not
    generalisation to new subjects.

    Args:
        dataset: The layout's cases.
        task: The task (``data.augment_*``, ``data.label_threshold``, ``data.seed``).
        salt: The run's salt for naming the derived cases and patients.
        cache_root: Folder for derived data (default: :func:`~mednas.data.default_cache_root` of the task).

    Returns:
        A dataset whose cases point into ``<cache>/synth/<content hash>/``, with :attr:`Dataset.augmentation` set
        when copies were made.

    Raises:
        ConfigError: If ``label_threshold`` is set for a classification task.
        DataError: Listing how many source cases cannot be read, and the first of them.
    """
    cfg = task.data
    if cfg.label_threshold is not None and task.problem != "segmentation":
        raise ConfigError("data.label_threshold applies to segmentation tasks only")
    sources = sorted(dataset.cases, key=lambda c: (c.images, str(c.label)))
    digests = _source_digests(sources)
    settings = {
        "v": SYNTH_VERSION,
        "copies": cfg.augment_copies,
        "spacing": cfg.augment_spacing,
        "threshold": cfg.label_threshold,
        "seed": cfg.seed,
        "spatial_dims": task.spatial_dims,
        "problem": task.problem,
    }
    key = hashlib.sha256(
        json.dumps({"settings": settings, "sources": digests}, sort_keys=True).encode()
    ).hexdigest()[:20]
    folder = (cache_root if cache_root is not None else default_cache_root(task)) / "synth" / key
    if not (folder / "manifest.json").is_file():
        _build(folder, sources, dataset, task)
    manifest = json.loads((folder / "manifest.json").read_text())
    cases = [_derived_case(sources[item["source"]], item, folder, salt, task) for item in manifest["cases"]]
    augmentation = None
    if cfg.augment_copies:
        augmentation = _augmentation_record(sources, manifest, task)
        logger.warning("augmented data: %s", augmentation["note"])
    return replace(
        dataset,
        cases=tuple(sorted(cases, key=lambda c: c.key)),
        augmentation=augmentation,
        description=(dataset.description + " (augmented copies)").strip()
        if cfg.augment_copies
        else dataset.description,
    )


def _source_digests(sources: list[Case]) -> list[list[Any] | None]:
    """Content digests of each source case's files (and its class label), the key of the derived data.

    Raises:
        DataError: Listing how many source cases cannot be read, and the first of them.
    """
    from mednas.data._prepare import file_digest

    digests: list[list[Any] | None] = []
    for case in sources:
        files = [*case.images] + ([case.label] if isinstance(case.label, str) else [])
        try:
            digests.append(
                [file_digest(p) for p in files] + [case.label if isinstance(case.label, int) else None]
            )
        except DataError:
            digests.append(None)
    bad = [c for c, d in zip(sources, digests) if d is None]
    if bad:
        first = next(p for p in [*bad[0].images, bad[0].label] if isinstance(p, str) and not Path(p).exists())
        raise DataError(
            f"{len(bad)} source case(s) for the augmented copies are missing: first: {first}: no such file"
        )
    return digests


def _derived_case(source: Case, item: dict[str, Any], folder: Path, salt: str, task: TaskConfig) -> Case:
    """The case of one manifest entry: copy ``item["copy"]`` (0: the original) of ``source``."""
    cfg = task.data
    copy = int(item["copy"])
    patient, order = source.patient, source.order
    if cfg.augment_group == "copy" and cfg.augment_copies:
        patient = hash_id(salt, f"{source.patient}#copy{copy}", "p")
        order = order_key(f"{source.order}#copy{copy}")
    return Case(
        key=hash_id(salt, f"{source.key}#copy{copy}", "c"),
        patient=patient,
        images=tuple(str(folder / p) for p in item["images"]),
        label=str(folder / item["label"]) if item.get("label") else source.label,
        display_name=f"{source.display_name}#copy{copy}" if copy else source.display_name,
        extra={**source.extra, "source_case": source.key, "copy": copy},
        order=order,
        given_split=source.given_split,  # copies stay in their source's given split
        identifier=f"{source.identifier}#copy{copy}" if copy else source.identifier,
    )


def _augmentation_record(sources: list[Case], manifest: dict[str, Any], task: TaskConfig) -> dict[str, Any]:
    """What :attr:`Dataset.augmentation` says about the copies: how many, of what, grouped how, and a note."""
    cfg = task.data
    n_patients = len({c.patient for c in sources})
    grouping = (
        "each copy is its own split unit, so figures measure robustness to augmentation, not generalisation "
        "to new subjects"
        if cfg.augment_group == "copy"
        else "copies stay with their source patient in one split"
    )
    return {
        "copies_per_case": cfg.augment_copies,
        "n_sources": len(sources),
        "n_source_patients": n_patients,
        "group": cfg.augment_group,
        "spacing": cfg.augment_spacing,
        "seed": cfg.seed,
        "transforms": manifest.get("transforms", []),
        "note": AUGMENTATION_NOTE.format(n_sources=len(sources), n_patients=n_patients, grouping=grouping),
    }


# ------------------------------------------------------------------------------------------------ building


def _build(folder: Path, sources: list[Case], dataset: Dataset, task: TaskConfig) -> None:
    from mednas.io import atomic_dir, write_json

    cfg = task.data
    n = cfg.augment_copies
    logger.info(
        "making derived data once into the cache: %d source case(s) x %d augmented cop%s",
        len(sources),
        n,
        "y" if n == 1 else "ies",
    )
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    with atomic_dir(folder) as tmp:
        for index, case in enumerate(sources):
            try:
                image, label, affine, dtype, modality = _read_source(case, task, dataset)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if cfg.augment_spacing:
                had_finding = label is not None and bool(label.any())
                image, label, affine = _coarsen(image, label, affine, cfg.augment_spacing, task.n_classes)
                if had_finding and label is not None and not label.any():
                    logger.warning(
                        "source case %d: its label lost every finding voxel when resampled to %g mm (majority vote); "
                        "use a finer data.augment_spacing",
                        index,
                        cfg.augment_spacing,
                    )
            for copy in range(n + 1):
                if copy:
                    seed = int(np.random.SeedSequence([cfg.seed, index, copy, 0x5E17]).generate_state(1)[0])
                    out_image, out_label = _augment(
                        image, label, modality, seed, _spacing(affine, image.ndim - 1)
                    )
                else:
                    out_image, out_label = image, label
                items.append(_write_copy(tmp, index, copy, out_image, out_label, affine, dtype))
        if problems:
            raise DataError(
                f"{len(problems)} source case(s) for the derived data cannot be read: first: {problems[0]}"
            )
        write_json(
            tmp / "manifest.json",
            {"version": SYNTH_VERSION, "cases": items, "transforms": _TRANSFORM_NAMES if n else []},
        )


def _read_source(case: Case, task: TaskConfig, dataset: Dataset) -> tuple[Any, ...]:
    from mednas.io import read_image

    channels = [read_image(p) for p in case.images]
    shapes = {c.spatial_shape for c in channels}
    if len(shapes) != 1:
        raise DataError(f"{case.images[0]}: channel images have different shapes {sorted(shapes)}")
    image = np.concatenate([c.array for c in channels], axis=0)
    if image.ndim - 1 != task.spatial_dims:
        raise DataError(
            f"{case.images[0]}: image has {image.ndim - 1} spatial dimensions, the task declares {task.spatial_dims}"
        )
    affine = np.asarray(channels[0].affine, dtype=float)
    label: np.ndarray | None = None
    if task.problem == "segmentation":
        if not isinstance(case.label, str):
            raise DataError(f"{case.images[0]}: segmentation case has no label mask")
        mask = read_image(case.label)
        if mask.array.shape[0] != 1:
            raise DataError(f"{case.label}: a label map must have one channel, found {mask.array.shape[0]}")
        if mask.spatial_shape != channels[0].spatial_shape:
            raise DataError(
                f"{case.label}: label shape {list(mask.spatial_shape)} differs from image shape {list(channels[0].spatial_shape)}"
            )
        if not np.allclose(mask.affine, affine, atol=1e-3):
            raise DataError(f"{case.label}: label geometry (affine) differs from its image's")
        values = mask.array[0]
        if task.data.label_threshold is not None:
            label = (values > task.data.label_threshold).astype(np.uint8)
        else:
            rounded = np.round(values)
            if not np.array_equal(rounded, values) or rounded.min() < 0 or rounded.max() >= task.n_classes:
                raise DataError(
                    f"{case.label}: label values are outside the declared classes 0..{task.n_classes - 1}"
                )
            label = rounded.astype(np.uint8)
    modality = case.extra.get("modality") or channels[0].meta.get("modality") or dataset.modality
    return image, label, affine, image.dtype, (str(modality).upper() if modality else None)


def _coarsen(
    image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, spacing: float, n_classes: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resample axes finer than ``spacing`` mm to it (area averaging; masks by majority vote), keeping world extent."""
    from mednas.data._prepare import _resize

    current = np.sqrt((affine[:3, : image.ndim - 1] ** 2).sum(axis=0))
    shape = np.array(image.shape[1:])
    new_shape = np.array(
        [max(1, int(round(n * s / spacing))) if s < spacing else n for n, s in zip(shape, current)]
    )
    if np.array_equal(new_shape, shape):
        return image, label, affine
    src_dtype = image.dtype
    resized, new_label = _resize(
        image.astype(np.float32), label, tuple(int(s) for s in new_shape), max(n_classes, 2)
    )
    factor = shape / new_shape
    new_affine = affine.copy()
    for axis, f in enumerate(factor):
        # Half-voxel convention: new voxel i covers old voxels [i*f, (i+1)*f), centred at (i + 0.5) * f - 0.5.
        new_affine[:3, 3] += affine[:3, axis] * (f - 1) / 2
        new_affine[:3, axis] = affine[:3, axis] * f
    return _restore_dtype(resized, src_dtype), new_label, new_affine  # type: ignore[return-value]


_TRANSFORM_NAMES = [
    "monai Rand2DElasticd/Rand3DElasticd: random rotation (+/-15 deg, in planes of near-isotropic voxels), "
    "scaling (+/-10%), translation (+/-5%) and elastic deformation",
    "monai RandBiasFieldd (not for CT): smooth multiplicative intensity bias, degree 3",
    "monai RandGaussianNoised: noise with std up to 2% of the 0.5-99.5 percentile range",
]


def _spacing(affine: np.ndarray, dims: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.sqrt((affine[:3, :dims] ** 2).sum(axis=0)))


def _rotation_ranges(spacing: tuple[float, ...], limit: float = 0.26) -> tuple[float, ...]:
    """Rotation range (radians) about each axis; none in planes of anisotropic voxels (it would shear anatomy)."""
    if len(spacing) == 2:
        return (limit if max(spacing) / min(spacing) <= 1.5 else 0.0,)
    out = []
    for axis in range(3):
        a, b = (spacing[i] for i in range(3) if i != axis)
        out.append(limit if max(a, b) / min(a, b) <= 1.5 else 0.0)
    return tuple(out)


def _augment(
    image: np.ndarray, label: np.ndarray | None, modality: str | None, seed: int, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """One augmented copy; deterministic for ``seed`` (MONAI transforms' own random state).

    Rotations are drawn in voxel space, so they are limited to planes of (nearly) isotropic voxels.
    """
    import torch
    from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandBiasFieldd, RandGaussianNoised

    dims = image.ndim - 1
    shape = image.shape[1:]
    low = float(image.min())
    lo, hi = np.percentile(image, [0.5, 99.5])
    keys = ["image", "label"] if label is not None else ["image"]
    modes = ("bilinear", "nearest")[: len(keys)]
    common: dict[str, Any] = {
        "keys": keys,
        "prob": 1.0,
        "rotate_range": _rotation_ranges(spacing),
        "scale_range": (0.1,) * dims,
        "translate_range": tuple(0.05 * s for s in shape),
        "mode": modes,
        # Shifted so that zeros padding is the image's own minimum (air in CT, background in MR).
        "padding_mode": "zeros",
    }
    spatial: Rand3DElasticd | Rand2DElasticd
    if dims == 3:
        spatial = Rand3DElasticd(sigma_range=(5.0, 8.0), magnitude_range=(60.0, 160.0), **common)
    else:
        spatial = Rand2DElasticd(
            spacing=tuple(max(4, s // 4) for s in shape), magnitude_range=(0.5, 2.0), **common
        )
    steps: list[Any] = [spatial]
    if modality != "CT":
        steps.append(RandBiasFieldd(keys=["image"], degree=3, coeff_range=(0.0, 0.2), prob=1.0))
    steps.append(
        RandGaussianNoised(keys=["image"], prob=1.0, std=0.02 * max(float(hi - lo), 1e-6), sample_std=True)
    )
    pipeline = Compose(steps)
    pipeline.set_random_state(seed=seed)
    data: dict[str, Any] = {"image": torch.from_numpy(image.astype(np.float32) - low)}
    if label is not None:
        data["label"] = torch.from_numpy(label[None].astype(np.float32))
    with torch.no_grad():
        out = pipeline(data)
    new_image = np.asarray(out["image"].detach().cpu(), dtype=np.float32) + low
    new_label = None if label is None else np.asarray(out["label"].detach().cpu())[0].round().astype(np.uint8)
    return _restore_dtype(new_image, image.dtype), new_label


def _restore_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        # Integer scanner values stay integers (smaller files); augmented values are rounded.
        rounded = np.round(array)
        small = rounded.size == 0 or (rounded.min() >= -32768 and rounded.max() <= 32767)
        return rounded.astype(np.int16 if small else np.int32)
    return array.astype(np.float32)


def _write_copy(
    tmp: Path,
    index: int,
    copy: int,
    image: np.ndarray,
    label: np.ndarray | None,
    affine: np.ndarray,
    dtype: np.dtype,
) -> dict[str, Any]:
    from mednas.io import MedImage, write_nifti

    stem = f"case{index:04d}_copy{copy:03d}"
    image_rel = f"{stem}_image.nii.gz"
    write_nifti(MedImage(np.ascontiguousarray(image), affine), tmp / image_rel)
    item: dict[str, Any] = {"source": index, "copy": copy, "images": [image_rel]}
    if label is not None:
        label_rel = f"{stem}_label.nii.gz"
        write_nifti(MedImage(np.ascontiguousarray(label[None]), affine), tmp / label_rel)
        item["label"] = label_rel
    return item
