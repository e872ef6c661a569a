"""Preprocess cases once and cache them: read, reorient, normalise intensities, resize to a target shape.

The cache holds one entry per set of cases at one shape (all images in one memory-mapped array), keyed by the
content hash of the source files and the preprocessing settings, so no proxy trial re-reads DICOM or re-resamples
a volume, concurrent builders end with one valid entry (atomic rename of identical content), and another machine
rebuilds the same entry from the same data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.data._cases import Case
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["ArrayData", "Preprocessing", "load_arrays", "load_case", "prepare_case", "file_digest"]

#: Bump when the preprocessing code changes what it produces, so stale cache entries are not used.
PREP_VERSION = 2

_digest_memo: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


@dataclass(frozen=True)
class Preprocessing:
    """What turns a source image into a network input (recorded in the run and exported in the bundle).

    Args:
        problem: ``"classification"`` or ``"segmentation"``.
        spatial_dims: 2 or 3.
        in_channels: Channels the network expects.
        n_classes: Classes (segmentation label values must lie in ``0..n_classes-1``).
        normalize: ``"zscore"`` (non-zero voxels, MR), ``"percentile"`` (0.5-99.5% to 0-1), ``"ct"`` (clip to
            ``ct_window`` HU and scale to 0-1), ``"none"``; see :func:`normalize_transform`.
        ct_window: HU window for ``"ct"``.
        orientation: Target axis codes for 3D volumes (``"RAS"``); 2D images keep their raster orientation.
    """

    problem: str
    spatial_dims: int
    in_channels: int
    n_classes: int
    normalize: str
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    orientation: str = "RAS"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["ct_window"] = list(self.ct_window)
        return d


@dataclass
class ArrayData:
    """Preprocessed cases in memory.

    Args:
        images: ``(N, C, *spatial)`` float32; from the cache a copy-on-write memory map of the entry's file.
        labels: ``(N,)`` int64 class indices, or ``(N, *spatial)`` uint8 label maps.
        keys: Case keys (salted hashes), in row order.
        patients: Patient keys, in row order.
    """

    images: np.ndarray
    labels: np.ndarray
    keys: list[str]
    patients: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: Sequence[int] | np.ndarray) -> ArrayData:
        """Rows ``index`` as a new :class:`ArrayData`."""
        idx = np.asarray(index, dtype=int)
        return ArrayData(
            self.images[idx], self.labels[idx], [self.keys[i] for i in idx], [self.patients[i] for i in idx]
        )


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and contents, sorted). Memoised per mtime.

    A MedMNIST member reference (``file.npz:train[12]``) digests the archive's bytes and the row it names.
    """
    p = Path(path)
    if not p.exists():
        from mednas.io import parse_member

        member = parse_member(path)
        if member is not None:
            npz, split, index = member
            return hashlib.sha256(f"{file_digest(npz)}:{split}[{index}]".encode()).hexdigest()
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(file_digest(f).encode())
        return h.hexdigest()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    memo_key = (os.path.abspath(p), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if memo_key in _digest_memo:
            return _digest_memo[memo_key]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _digest_lock:
        _digest_memo[memo_key] = digest
    return digest


def _reorient(array: np.ndarray, affine: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib
    from nibabel import orientations as ornt

    current = ornt.io_orientation(affine)
    wanted = ornt.axcodes2ornt(tuple(target))
    transform = ornt.ornt_transform(current, wanted)
    # array is (C, X, Y, Z): apply to each channel's spatial axes.
    out = np.stack([ornt.apply_orientation(ch, transform) for ch in array])
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape[1:])
    return np.ascontiguousarray(out), new_affine


def normalize_transform(how: str, ct_window: tuple[float, float]) -> Any:
    """The MONAI transform for an intensity normalisation, so an exported bundle repeats it exactly.

    ``zscore``: ``NormalizeIntensity(nonzero=True, channel_wise=True)`` (mean/std of non-zero voxels; zeros
    stay zero); ``percentile``: ``ScaleIntensityRangePercentiles(0.5, 99.5, 0, 1, clip=False)`` per channel;
    ``ct``: ``ScaleIntensityRange(lo, hi, 0, 1, clip=True)``; ``none``: ``None``.
    """
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

    if how == "zscore":
        return NormalizeIntensity(nonzero=True, channel_wise=True)
    if how == "percentile":
        return ScaleIntensityRangePercentiles(
            lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=False, channel_wise=True
        )
    if how == "ct":
        lo, hi = ct_window
        return ScaleIntensityRange(a_min=float(lo), a_max=float(hi), b_min=0.0, b_max=1.0, clip=True)
    return None


def _normalize(image: np.ndarray, how: str, ct_window: tuple[float, float]) -> np.ndarray:
    import torch

    transform = normalize_transform(how, ct_window)
    image = image.astype(np.float32, copy=False)
    if transform is None:
        return image
    # MONAI's intensity transforms may work in place: give them a copy, never the caller's array.
    return np.asarray(
        transform(torch.from_numpy(np.array(image, dtype=np.float32, copy=True))), dtype=np.float32
    )


def load_case(case: Case, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray | int | None, np.ndarray]:
    """Read one case at its own resolution, reoriented and normalised.

    Returns:
        ``(image (C, *spatial) float32, label (int, or (*spatial) uint8 map, or None), affine 4x4)``.

    Raises:
        DataError: Naming the file, for unreadable files, channel or shape mismatches, bad label values.
    """
    from mednas.io import read_image

    channels = [read_image(p) for p in case.images]
    arrays = [img.array for img in channels]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"{case.images[0]}: channel images have different shapes {sorted(shapes)}")
    image = np.concatenate(arrays, axis=0)
    affine = np.asarray(channels[0].affine, dtype=float)
    if image.ndim - 1 != prep.spatial_dims:
        if prep.spatial_dims == 2 and image.ndim == 4 and image.shape[-1] == 1:
            image = image[..., 0]
        else:
            raise DataError(
                f"{case.images[0]}: image has {image.ndim - 1} spatial dimensions, the task declares {prep.spatial_dims}"
            )
    if image.shape[0] != prep.in_channels:
        if prep.in_channels == 1 and image.shape[0] in (3, 4):
            image = image[:3].mean(axis=0, keepdims=True)  # RGB(A) radiograph exports -> grey
        else:
            raise DataError(
                f"{case.images[0]}: image has {image.shape[0]} channels, the task declares in_channels={prep.in_channels}"
            )
    label: np.ndarray | int | None
    if prep.problem == "segmentation":
        if not isinstance(case.label, str):
            raise DataError(f"{case.images[0]}: segmentation case has no mask path")
        mask_img = read_image(case.label)
        mask = mask_img.array
        if mask.shape[0] != 1:
            raise DataError(f"{case.label}: a label map must have one channel, found {mask.shape[0]}")
        if mask.shape[1:] != image.shape[1:]:
            raise DataError(
                f"{case.label}: label shape {list(mask.shape[1:])} differs from image shape {list(image.shape[1:])}"
            )
        if not np.allclose(mask_img.affine, affine, atol=1e-3):
            raise DataError(f"{case.label}: label geometry (affine) differs from its image's")
        values = np.unique(mask)
        if (
            not np.all(np.isclose(values, np.round(values)))
            or values.min() < 0
            or values.max() >= prep.n_classes
        ):
            bad = [v for v in values.tolist() if v < 0 or v >= prep.n_classes or v != round(v)][:5]
            raise DataError(
                f"{case.label}: label values {bad} are outside the declared classes 0..{prep.n_classes - 1}"
            )
        label = np.round(mask).astype(np.uint8)
        if prep.spatial_dims == 3:
            both = np.concatenate([image, label.astype(np.float32)], axis=0)
            both, affine = _reorient(both, affine, prep.orientation)
            image, label = both[:-1], both[-1:].astype(np.uint8)
        label = label[0]
    else:
        label = case.label if isinstance(case.label, int) else None
        if prep.spatial_dims == 3:
            image, affine = _reorient(image, affine, prep.orientation)
    image = _normalize(image, prep.normalize, prep.ct_window)
    return image, label, affine


def _resize(image: np.ndarray, label: np.ndarray | int | None, shape: Sequence[int], n_classes: int):  # type: ignore[no-untyped-def]
    import torch
    from monai.transforms import Resize

    shape = tuple(int(s) for s in shape)
    if tuple(image.shape[1:]) != shape:
        down = all(t <= s for t, s in zip(shape, image.shape[1:]))
        mode = "area" if down else ("bilinear" if len(shape) == 2 else "trilinear")
        image = np.asarray(
            Resize(shape, mode=mode, anti_aliasing=False)(torch.from_numpy(image)), dtype=np.float32
        )
        if isinstance(label, np.ndarray):
            # Majority vote per output voxel: resize the one-hot map with area averaging, then argmax.
            onehot = np.eye(n_classes, dtype=np.float32)[label].transpose(-1, *range(label.ndim))
            if down:
                resized = np.asarray(
                    Resize(shape, mode="area", anti_aliasing=False)(torch.from_numpy(onehot))
                )
                label = resized.argmax(axis=0).astype(np.uint8)
            else:
                label = np.asarray(
                    Resize(shape, mode="nearest")(torch.from_numpy(label[None].astype(np.float32)))
                )[0].astype(np.uint8)
    return np.ascontiguousarray(image, dtype=np.float32), label


def prepare_case(
    case: Case, shape: Sequence[int], prep: Preprocessing
) -> tuple[np.ndarray, np.ndarray | int | None]:
    """Read, reorient, normalise and resize one case to ``shape`` (no cache)."""
    image, label, _ = load_case(case, prep)
    return _resize(image, label, shape, prep.n_classes)


def source_key(case: Case) -> str:
    """Content key of a case's sources: the bytes of its images and mask (or MedMNIST row) and its class label."""
    sources = [file_digest(p) for p in case.images]
    if isinstance(case.label, str):
        sources.append(file_digest(case.label))
    payload = json.dumps(
        {"src": sources, "label": case.label if isinstance(case.label, int) else None}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_key(rows: Sequence[str], shape: Sequence[int], prep: Preprocessing) -> str:
    """Key of one cache entry: the cases' content keys (as a set, with repeats), the shape, settings and code version."""
    payload = json.dumps(
        {"v": PREP_VERSION, "rows": sorted(rows), "shape": [int(s) for s in shape], "prep": prep.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


#: Files of one cache entry: all images in one array, all labels in another, and what they hold.
_IMAGES, _LABELS, _INDEX = "images.npy", "labels.npy", "index.json"


def _label_layout(prep: Preprocessing, n: int, shape: tuple[int, ...]) -> tuple[tuple[int, ...], Any]:
    if prep.problem == "segmentation":
        return (n, *shape), np.uint8
    return (n,), np.int64


def _open_entry(
    folder: Path, rows: Sequence[str], shape: tuple[int, ...], prep: Preprocessing
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Memory-map a complete entry, or return ``None`` when it is missing or does not hold what its index says."""
    try:
        index = json.loads((folder / _INDEX).read_text())
        # Copy-on-write: pages are shared between processes until someone writes (torch.from_numpy needs a
        # writable array; nothing ever reaches the file).
        images = np.load(folder / _IMAGES, mmap_mode="c", allow_pickle=False)
        labels = np.load(folder / _LABELS, allow_pickle=False)
    except (FileNotFoundError, OSError, ValueError, EOFError):
        return None
    stored = index.get("rows") if isinstance(index, dict) else None
    n = len(rows)
    if (
        not isinstance(stored, list)
        or sorted(stored) != sorted(rows)
        or images.shape != (n, prep.in_channels, *shape)
        or images.dtype != np.float32
        or labels.shape != _label_layout(prep, n, shape)[0]
    ):
        return None
    return images, labels, [str(r) for r in stored]


def _build_entry(
    folder: Path,
    cases: Sequence[Case],
    rows: Sequence[str],
    shape: tuple[int, ...],
    prep: Preprocessing,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Read every case once and write the entry under a temporary name, then rename it into place."""
    import shutil

    from mednas.io import atomic_dir, write_json

    if _open_entry(folder, rows, shape, prep) is not None:
        return  # another process finished it meanwhile
    if (
        folder.exists()
    ):  # renamed into place complete, so broken since (a disk error, a truncated copy): rebuild
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.stale")
        try:
            os.rename(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
        except OSError:
            pass  # another process moved it first
    n = len(cases)
    label_shape, label_dtype = _label_layout(prep, n, shape)
    with atomic_dir(folder) as tmp:
        images = np.lib.format.open_memmap(
            tmp / _IMAGES, mode="w+", dtype=np.float32, shape=(n, prep.in_channels, *shape)
        )
        labels = np.zeros(label_shape, dtype=label_dtype)
        for i, case in enumerate(cases):
            image, label = prepare_case(case, shape, prep)
            images[i] = image
            labels[i] = -1 if label is None else label
            if progress:
                progress(i + 1, n)
        images.flush()
        del images
        np.save(tmp / _LABELS, labels, allow_pickle=False)
        for name in (_IMAGES, _LABELS):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        write_json(
            tmp / _INDEX,
            {
                "version": PREP_VERSION,
                "n": n,
                "shape": list(shape),
                "prep": prep.to_dict(),
                "rows": list(rows),
            },
        )


def load_arrays(
    cases: Sequence[Case],
    shape: Sequence[int],
    prep: Preprocessing,
    cache_dir: str | os.PathLike[str] | None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ArrayData:
    """Return the cases preprocessed to ``shape``, from the cache where present, else building the entry in one pass.

    One entry holds a whole set of cases at one shape: ``<cache_dir>/<key>/`` with ``images.npy`` ``(N, C,
    *shape)`` float32, ``labels.npy`` and ``index.json`` (the content key of each row). The key is the cases'
    content (source bytes and labels, in any order), the shape and the preprocessing settings, so a resumed or
    parallel run re-uses it without reading a source image again. The entry is built under a temporary name and
    renamed into place, so concurrent builders end with one valid entry; it is read with memory mapping.

    Args:
        cases: Cases to load, in the order wanted (the rows follow it).
        shape: Target spatial shape.
        prep: Preprocessing settings.
        cache_dir: Cache folder (``None``: no caching).
        progress: Called with ``(done, total)`` while an entry is built (once with ``(total, total)`` on a hit).
    """
    shape = tuple(int(s) for s in shape)
    n = len(cases)
    keys, patients = [c.key for c in cases], [c.patient for c in cases]
    if n == 0 or cache_dir is None:
        label_shape, label_dtype = _label_layout(prep, n, shape)
        images = np.zeros((n, prep.in_channels, *shape), np.float32)
        labels = np.zeros(label_shape, dtype=label_dtype)
        for i, case in enumerate(cases):
            image, label = prepare_case(case, shape, prep)
            images[i], labels[i] = image, -1 if label is None else label
            if progress:
                progress(i + 1, n)
        return ArrayData(images=images, labels=labels, keys=keys, patients=patients)
    rows = [source_key(c) for c in cases]
    folder = Path(cache_dir) / cache_key(rows, shape, prep)
    entry = _open_entry(folder, rows, shape, prep)
    if entry is None:
        t0 = time.perf_counter()
        _build_entry(folder, cases, rows, shape, prep, progress)
        entry = _open_entry(folder, rows, shape, prep)
        if entry is None:
            raise DataError(f"{folder}: the proxy cache entry just built cannot be read back")
        logger.debug(
            "cached %d cases at %s in %.1f s (one entry, %s)",
            n,
            "x".join(map(str, shape)),
            time.perf_counter() - t0,
            folder.name,
        )
    elif progress:
        progress(n, n)
    images, labels, stored = entry
    if stored != rows:
        # Same cases, another order (another run's salt sharing data.cache_dir): pick rows by content key.
        where: dict[str, list[int]] = {}
        for i, r in enumerate(stored):
            where.setdefault(r, []).append(i)
        take = np.array([where[r].pop() for r in rows], dtype=np.int64)
        images, labels = images[take], labels[take]
    return ArrayData(images=images, labels=labels, keys=keys, patients=patients)
