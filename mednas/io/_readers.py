"""One entry point for every image format: :func:`read_image` checks what a path holds, then hands it on.

The content decides, not only the name: a JPEG renamed ``.png`` or a text file named ``.nii`` gets a one-line
:class:`~mednas.errors.DataError` naming the file, never a library traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mednas.errors import DataError
from mednas.io._image import MedImage
from mednas.io._npz import parse_member

__all__ = ["SUPPORTED_SUFFIXES", "read_image", "sniff_format"]

logger = logging.getLogger(__name__)

# Suffix -> format; a DICOM file may have any suffix (or none) and is recognised by its content.
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".dicom": "dicom",
}
_NAMES = {
    "nifti": "NIfTI",
    "nifti-gz": "gzip-compressed",
    "nrrd": "NRRD",
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "dicom": "DICOM",
    "text": "text",
}


def read_image(path: str | os.PathLike[str], *, series: str | None = None) -> MedImage:
    """Read a medical image from a DICOM folder or file, NIfTI, NRRD, PNG, JPEG or TIFF.

    Args:
        path: A folder (a DICOM series, searched recursively), or a file: ``.nii``/``.nii.gz``, ``.nrrd``/
            ``.nhdr``, ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.dcm``, or any file that starts
            with the DICOM preamble (extension-less and UID-named files included), or one image of a MedMNIST
            archive named ``/data/file.npz:train[12]`` (see :func:`mednas.io.member_reference`).
        series: For a folder holding several DICOM series, which one: SeriesInstanceUID, the ``series_key``
            that :func:`list_series` shows, SeriesNumber, or SeriesDescription (case-insensitive).

    Returns:
        A :class:`MedImage`: ``array`` channel first, ``(C, X, Y)`` or ``(C, X, Y, Z)``, where X runs along
        the columns and Y along the rows of a 2D image; ``affine`` maps ``(x, y, z)`` voxel indices to RAS mm.
        DICOM values are rescaled (RescaleSlope/Intercept) and MONOCHROME1 is inverted; integers stay integers
        where the rescale is integral, otherwise float32.

    Raises:
        DataError: One line naming ``path`` and the problem: missing, empty, unsupported or mislabelled file,
            truncated or corrupt data, no pixel data, NaN or infinite voxels, ambiguous DICOM series.

    Example:
        >>> image = read_image("../shared/data/pyradiomics/brain1_image.nrrd")  # doctest: +SKIP
        >>> image.array.shape, image.orientation
        ((1, 256, 256, 25), 'LAS')
    """
    member = parse_member(path) if not Path(path).exists() else None
    if member is not None:
        # An image inside a MedMNIST archive (``file.npz:train[12]``): sliced from the array, never copied out.
        from mednas.io._npz import read_npz_member

        image = read_npz_member(*member)
        _check_finite(image, Path(path))
        return image
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        from mednas.io._dicom import read_dicom_series

        image = read_dicom_series(path, series=series)
    else:
        if series is not None:
            raise DataError(f"{path}: series={series!r} applies to DICOM folders only, and this is a file")
        image = _read_file(path)
    from mednas.io._limits import check_geometry

    check_geometry(image.affine, image.spatial_dims, path)
    _check_finite(image, path)
    return image


def _read_file(path: Path) -> MedImage:
    import stat

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise DataError(f"{path}: not a regular file")
        size = info.st_size
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    claimed = _format_from_name(path)
    found = sniff_format(head)
    if claimed is None:
        if found == "dicom":
            claimed = "dicom"
        elif not path.suffix:
            raise DataError(
                f"{path}: unrecognised file: no extension, and not DICOM (no 'DICM' marker at byte 128)"
            )
        else:
            suffix = "".join(path.suffixes[-2:])
            raise DataError(
                f"{path}: unsupported file type {suffix!r}; mednas reads DICOM, NIfTI (.nii, .nii.gz), "
                "NRRD (.nrrd, .nhdr), PNG, JPEG and TIFF"
            )
    expected = "nifti-gz" if claimed == "nifti" and path.name.lower().endswith(".gz") else claimed
    if found != expected and not (
        claimed == "dicom" and found is None and _maybe_dicom_without_preamble(head)
    ):
        what = f"a {_NAMES[found]} file" if found else "not a recognised image format"
        raise DataError(
            f"{path}: content does not match its name: named {_NAMES[expected]} but the bytes are {what}"
        )
    return _dispatch(path, claimed)


def _dispatch(path: Path, fmt: str) -> MedImage:
    if fmt == "dicom":
        from mednas.io._dicom import read_dicom_file

        return read_dicom_file(path)
    if fmt == "nifti":
        from mednas.io._nifti import read_nifti

        return read_nifti(path)
    if fmt == "nrrd":
        from mednas.io._nrrd import read_nrrd

        return read_nrrd(path)
    from mednas.io._raster import read_raster

    return read_raster(path, fmt)


def _format_from_name(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUPPORTED_SUFFIXES[suffix]
    return None


def sniff_format(head: bytes) -> str | None:
    """Name the format that a file's first bytes announce, or ``None``.

    Args:
        head: At least the first 132 bytes of the file (the DICOM marker sits at byte 128).

    Returns:
        ``"dicom"``, ``"nifti"``, ``"nifti-gz"`` (any gzip stream), ``"nrrd"``, ``"png"``, ``"jpeg"``,
        ``"tiff"``, ``"text"`` (printable ASCII/UTF-8 with no other signature), or ``None``.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"\x1f\x8b"):
        return "nifti-gz"
    if len(head) >= 348:
        sizeof_hdr = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
        if 348 in sizeof_hdr and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return "nifti"
        if 540 in sizeof_hdr and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return "nifti"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "text"
    return None


def _maybe_dicom_without_preamble(head: bytes) -> bool:
    # Old files may lack the preamble and start directly with a group 0002 or 0008 element.
    return head[:2] in (b"\x02\x00", b"\x08\x00")


def _check_finite(image: MedImage, path: Path) -> None:
    array = image.array
    if array.dtype.kind not in "fc":
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        n_nan = int(np.isnan(array).sum())
        raise DataError(
            f"{path}: {bad} of {array.size} voxels are not finite ({n_nan} NaN, {bad - n_nan} infinite); "
            "mednas needs finite values"
        )


def one_line(exc: BaseException, limit: int = 240) -> str:
    """Squeeze a library exception's message onto one line of at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
