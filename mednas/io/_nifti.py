"""NIfTI reading and atomic writing through nibabel, keeping the affine exactly as nibabel reports it.

Masks and predictions leave mednas as NIfTI: :func:`write_nifti` never leaves half a file behind.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import DataError
from mednas.io._atomic import write_bytes
from mednas.io._image import MedImage
from mednas.io._phi import scrub
from mednas.io._readers import one_line

__all__ = ["read_nifti", "write_nifti"]

# NIfTI stores the unit of its affine; MedImage is always in millimetres.
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3}


def read_nifti(path: Path) -> MedImage:
    """Read a ``.nii`` or ``.nii.gz`` file.

    A 2D file gives ``(1, X, Y)``, 3D ``(1, X, Y, Z)``, 4D ``(T, X, Y, Z)`` (the fourth axis becomes channels),
    5D ``(X, Y, Z, 1, C)`` vector images ``(C, X, Y, Z)``. Scaled data (``scl_slope``) comes back as float32,
    unscaled data keeps its stored dtype.

    Raises:
        DataError: If nibabel cannot read the file or its layout is not one of the above.
    """
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))  # Nifti1Image or Nifti2Image, chosen by nibabel from the header
    except Exception as exc:  # nibabel and gzip raise many types on corrupt files
        raise DataError(f"{path}: cannot read NIfTI: {one_line(exc)}") from exc
    _check_size(img, path)
    try:
        data = np.asanyarray(img.dataobj)
        affine = np.array(img.affine, dtype=np.float64)
        on_disk = img.get_data_dtype()
        units = img.header.get_xyzt_units()[0]
    except Exception as exc:  # nibabel and gzip raise many types on corrupt files
        raise DataError(f"{path}: cannot read NIfTI: {one_line(exc)}") from exc
    if data.dtype.fields:  # RGB24 / RGBA32 structured voxels
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
        data = np.moveaxis(data, -1, 0)
    elif data.ndim in (2, 3):
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    elif data.ndim == 5 and data.shape[3] == 1:
        data = np.moveaxis(data[:, :, :, 0, :], -1, 0)
    else:
        raise DataError(
            f"{path}: NIfTI image of shape {tuple(data.shape)} is not supported (2D to 4D, or 5D vector)"
        )
    if data.dtype == np.float64 and on_disk != np.float64:
        # nibabel applies scl_slope in float64; float32's 7 significant digits suffice for scaled integer data.
        data = data.astype(np.float32)
    scale = _TO_MM.get(units, 1.0)
    if scale != 1.0:
        affine[:3, :] *= scale
    meta: dict[str, Any] = {
        "format": "nifti",
        "source": "nibabel",
        "modality": None,
        "dtype": str(on_disk),
        "units": units,
    }
    return MedImage(array=data, affine=affine, meta=scrub(meta))


def _check_size(img: Any, path: Path) -> None:
    """Refuse a header that declares more voxels than the file can hold, before nibabel allocates them."""
    from mednas.io._limits import DEFLATE_MAX_RATIO, check_declared_size

    try:
        shape = tuple(int(d) for d in img.header.get_data_shape())
        itemsize = int(img.get_data_dtype().itemsize)
        offset = int(img.header.get_data_offset())
        slope, _ = img.header.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 - a corrupt header
        raise DataError(f"{path}: cannot read NIfTI header: {one_line(exc)}") from exc
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        check_declared_size(
            path, shape, itemsize, available=size, ratio=DEFLATE_MAX_RATIO, what="NIfTI header"
        )
    else:
        check_declared_size(
            path, shape, itemsize, available=max(size - offset, 0), ratio=1, what="NIfTI header"
        )
    if slope is not None and itemsize < 8:  # scaled data comes out of nibabel as float64
        check_declared_size(path, shape, 8, what="NIfTI header (scaled to float64)")


def write_nifti(image: MedImage, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` as NIfTI-1 atomically (temporary file, then rename), keeping its affine.

    One channel is written as a 2D/3D volume, several channels as a 4D volume with channels last (which
    :func:`read_image` reads back channel first). bool is written as uint8 and int64 as int32 when it fits.
    Both sform and qform are set (code 1, scanner) and the unit is mm; ``.nii.gz`` is gzip-compressed.

    Args:
        image: The image; masks and predictions on the grid of the image they belong to.
        path: Destination ending in ``.nii`` or ``.nii.gz``.

    Returns:
        The path written.

    Raises:
        DataError: If the name does not end in ``.nii``/``.nii.gz`` or the voxel type cannot be stored.

    Example:
        >>> write_nifti(MedImage(mask[None], image.affine), "out/case_1_mask.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise DataError(f"{path}: a NIfTI file name must end in .nii or .nii.gz")
    array = np.asarray(image.array)
    if array.ndim not in (3, 4):
        raise DataError(f"{path}: cannot write an array of shape {array.shape}: expected (C, X, Y[, Z])")
    data = _storable(array, path)
    if data.shape[0] == 1:
        data = data[0]
    elif array.ndim == 3:
        data = np.moveaxis(data, 0, -1)[:, :, None, :]  # (X, Y, 1, C)
    else:
        data = np.moveaxis(data, 0, -1)  # (X, Y, Z, C)
    affine = np.asarray(image.affine, dtype=float)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    raw = img.to_bytes()
    if name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=6, mtime=0)  # mtime=0: same image, same bytes
    return write_bytes(path, raw)


def _storable(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        if array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max):
            return array.astype(np.int32)
        return array.astype(np.float64)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: NIfTI cannot store voxels of type {array.dtype}")
    return array
