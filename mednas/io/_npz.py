"""Images inside a MedMNIST ``.npz`` archive, named ``/data/file.npz:train[12]`` and read without copying them out.

A MedMNIST file holds every image of a split in one array. mednas reads it where the user keeps it: a case's image
is a *member reference* (the archive's path, the split and the row), and :func:`mednas.io.read_image` slices the
array. Each process loads an archive's arrays once (``np.load`` of an ``.npz`` is lazy per array) and keeps them
while the file is unchanged.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np

from mednas.errors import DataError
from mednas.io._image import MedImage

__all__ = ["member_reference", "npz_arrays", "parse_member", "read_npz_member"]

_MEMBER = re.compile(r"^(?P<file>.+\.npz):(?P<split>train|val|test)\[(?P<index>\d+)\]$", re.IGNORECASE)
_MEDMNIST_ARRAY = re.compile(r"^(train|val|test)_(images|labels)$")
_lock = threading.Lock()
# (resolved path, size, mtime) -> {array name: array}; the arrays of the files this process reads.
_loaded: dict[tuple[str, int, int], dict[str, np.ndarray | None]] = {}


def member_reference(npz: str | os.PathLike[str], split: str, index: int) -> str:
    """Name row ``index`` of ``split``'s images in ``npz`` (``/data/file.npz:train[12]``)."""
    return f"{os.fspath(npz)}:{split}[{int(index)}]"


def parse_member(path: str | os.PathLike[str]) -> tuple[Path, str, int] | None:
    """Return ``(archive, split, index)`` for a member reference, ``None`` for anything else (an ordinary path)."""
    match = _MEMBER.match(os.fspath(path))
    if match is None:
        return None
    return Path(match["file"]), match["split"].lower(), int(match["index"])


def npz_arrays(npz: str | os.PathLike[str]) -> dict[str, np.ndarray | None]:
    """Return the MedMNIST arrays of ``npz`` (``{train,val,test}_{images,labels}``), loaded once per process.

    They are kept while the file keeps its size and modification time. Other members are listed (as ``None``)
    but never read, so a stray large member costs nothing.

    Raises:
        DataError: Naming the file when it is missing or not a readable ``.npz`` archive.
    """
    path = Path(npz)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"{path}: file not found") from None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _loaded.get(key)
    if cached is not None:
        return cached
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile/ValueError/OSError on a corrupt archive
        raise DataError(f"{path}: cannot read the .npz archive: {' '.join(str(exc).split())}") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: cannot read the .npz archive: it holds a single array, not named arrays")
    arrays: dict[str, np.ndarray | None] = {}
    with archive:
        for name in archive.files:
            if not _MEDMNIST_ARRAY.match(name):
                arrays[name] = None  # listed, not read
                continue
            try:
                arrays[name] = np.asarray(archive[name])
            except Exception as exc:  # a truncated member
                raise DataError(f"{path}: cannot read array {name!r}: {' '.join(str(exc).split())}") from None
    with _lock:
        # One version of a file at a time: an archive rewritten in place replaces its old arrays.
        for old in [k for k in _loaded if k[0] == key[0]]:
            del _loaded[old]
        _loaded[key] = arrays
    return arrays


def read_npz_member(npz: str | os.PathLike[str], split: str, index: int) -> MedImage:
    """Read one image of a MedMNIST archive in the layout every reader gives: ``(C, X, Y[, Z])``.

    2D images ``(H, W)`` or ``(H, W, C)`` become ``(C, X=columns, Y=rows)``, exactly as the same image saved as a
    PNG reads; 3D volumes ``(D, H, W)`` become ``(1, X=W, Y=H, Z=D)``. The affine is the identity (MedMNIST
    carries no geometry).

    Raises:
        DataError: Naming the reference when the archive, the split or the row is missing.
    """
    where = member_reference(npz, split, index)
    arrays = npz_arrays(npz)
    images = arrays.get(f"{split}_images")
    if images is None:
        raise DataError(f"{where}: the archive has no {split}_images array")
    if not 0 <= index < len(images):
        raise DataError(f"{where}: {split}_images has {len(images)} images, no row {index}")
    image = images[index]
    if image.ndim == 2:
        array = image.T[None]
    elif image.ndim == 3 and image.shape[-1] in (1, 3):
        array = np.transpose(image, (2, 1, 0))  # (H, W, C) -> (C, X, Y)
    elif image.ndim == 3:
        array = np.transpose(image, (2, 1, 0))[None]  # (D, H, W) -> (1, X, Y, Z)
    else:
        raise DataError(f"{where}: image of shape {image.shape} is not supported")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    meta = {"format": "medmnist", "source": "numpy", "modality": None, "dtype": str(image.dtype)}
    return MedImage(array=np.ascontiguousarray(array), affine=np.eye(4), meta=meta)
