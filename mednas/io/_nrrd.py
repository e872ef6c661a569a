"""NRRD reading through pynrrd: ``space``, ``space directions`` and ``space origin`` become a RAS affine.

NRRD states its world frame by name (3D Slicer and pyradiomics write left-posterior-superior), and its axis
directions may point either way (pyradiomics' brain1 runs along -y), so the conversion is done explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import DataError
from mednas.io._image import MedImage
from mednas.io._phi import scrub
from mednas.io._readers import one_line

__all__ = ["read_nrrd"]

logger = logging.getLogger(__name__)

# Sign that turns each world axis of a NRRD space into RAS.
_SPACE_TO_RAS: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "right-anterior-superior-time": (1.0, 1.0, 1.0),
    "rast": (1.0, 1.0, 1.0),
    "left-anterior-superior-time": (-1.0, 1.0, 1.0),
    "last": (-1.0, 1.0, 1.0),
    "left-posterior-superior-time": (-1.0, -1.0, 1.0),
    "lpst": (-1.0, -1.0, 1.0),
}
# Axis kinds that carry values per voxel rather than a position.
_SPATIAL_KINDS = frozenset({"domain", "space"})


def read_nrrd(path: Path) -> MedImage:
    """Read a ``.nrrd`` file or a ``.nhdr`` detached header (with its data file).

    Spatial axes keep NRRD's order (x fastest, as pynrrd's ``index_order="F"`` gives them); a non-spatial axis
    (``kinds`` such as ``vector`` or ``RGB-color``, or one without a space direction) becomes the channel axis.

    Raises:
        DataError: If pynrrd cannot read the file, or it has not 2 or 3 spatial axes and at most one other.
    """
    import nrrd

    _check_size(path)
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib errors...
        raise DataError(f"{path}: cannot read NRRD: {one_line(exc)}") from exc
    ndim = data.ndim
    kinds = [str(k).strip().lower() for k in header.get("kinds", [])]
    if len(kinds) != ndim:
        kinds = ["domain"] * ndim
    directions = header.get("space directions")
    if directions is not None:
        directions = np.asarray(directions, dtype=float)
    if directions is not None:
        # pynrrd gives a row of NaN for an axis without a direction ("none"): that axis holds values.
        spatial = [axis for axis in range(ndim) if np.isfinite(directions[axis]).all()]
    else:
        spatial = [axis for axis in range(ndim) if kinds[axis] in _SPATIAL_KINDS]
    other = [axis for axis in range(ndim) if axis not in spatial]
    if len(spatial) not in (2, 3) or len(other) > 1:
        raise DataError(
            f"{path}: NRRD with {len(spatial)} spatial and {len(other)} other axes is not supported "
            "(need 2 or 3 spatial axes and at most one channel axis)"
        )
    array = np.moveaxis(data, other[0], 0) if other else data[None]
    affine, space = _affine(header, directions, spatial, path)
    meta: dict[str, Any] = {
        "format": "nrrd",
        "source": "pynrrd",
        "modality": None,
        "dtype": str(data.dtype),
        "space": space,
    }
    return MedImage(array=array, affine=affine, meta=scrub(meta))


def _check_size(path: Path) -> None:
    """Read the header alone and refuse ``sizes`` that the data cannot hold, before pynrrd allocates them."""
    import nrrd

    from mednas.io._limits import DEFLATE_MAX_RATIO, check_declared_size

    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            header_end = fh.tell()
        sizes = [int(v) for v in np.atleast_1d(header["sizes"])]
        itemsize = int(nrrd.reader._determine_datatype(header).itemsize)
    except DataError:
        raise
    except (
        Exception
    ) as exc:  # pynrrd raises NRRDError, ValueError, KeyError, UnicodeDecodeError on corrupt headers
        raise DataError(f"{path}: cannot read NRRD header: {one_line(exc)}") from exc
    encoding = str(header.get("encoding", "raw")).lower()
    data_file = header.get("datafile", header.get("data file"))
    available: int | None = None
    if data_file is None:
        available = max(path.stat().st_size - header_end, 0)
    elif isinstance(data_file, str) and not data_file.startswith("LIST"):
        candidate = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        available = candidate.stat().st_size if candidate.is_file() else None
    ratio: float | None = None
    if encoding == "raw":
        ratio = 1
    elif encoding in ("gzip", "gz"):
        ratio = DEFLATE_MAX_RATIO
    elif encoding in ("ascii", "text", "txt"):
        itemsize, ratio = 1, 0.5  # at least a digit and a separator per value
    check_declared_size(path, sizes, itemsize, available=available, ratio=ratio, what="NRRD header")


def _affine(
    header: dict[str, Any], directions: np.ndarray | None, spatial: list[int], path: Path
) -> tuple[np.ndarray, str | None]:
    space = header.get("space")
    affine = np.eye(4)
    if directions is None:
        spacings = np.asarray(header.get("spacings", [1.0] * (max(spatial) + 1)), dtype=float)
        for column, axis in enumerate(spatial):
            value = float(spacings[axis]) if np.isfinite(spacings[axis]) else 1.0
            affine[column, column] = value
        return affine, space
    world_dim = directions.shape[1]
    if world_dim not in (2, 3):
        raise DataError(f"{path}: NRRD space dimension {world_dim} is not supported")
    origin = np.asarray(header.get("space origin", np.zeros(world_dim)), dtype=float)
    if origin.shape != (world_dim,) or not np.isfinite(origin).all():
        origin = np.zeros(world_dim)
    signs = np.ones(3)
    if space is not None:
        known = _SPACE_TO_RAS.get(str(space).strip().lower())
        if known is None:
            logger.warning("NRRD space %r has no anatomical meaning: using its axes as RAS", space)
        else:
            signs = np.asarray(known)
    for column, axis in enumerate(spatial):
        affine[:world_dim, column] = directions[axis] * signs[:world_dim]
    affine[:world_dim, 3] = origin * signs[:world_dim]
    if len(spatial) == 2 and world_dim == 3:
        # A 2D image in 3D space: complete the frame with the unit normal so the affine stays invertible.
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = normal / (np.linalg.norm(normal) or 1.0)
    return affine + 0.0, space  # + 0.0 turns the -0.0 of flipped zeros into 0.0
