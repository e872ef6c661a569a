"""PNG, JPEG and TIFF reading (scikit-image, tifffile for TIFF) into MONAI's 2D layout ``(C, X, Y)``.

Raster files store rows first; mednas, like MONAI's image readers, puts columns (X) before rows (Y) so 2D and
3D images share one axis convention.
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

__all__ = ["read_raster"]

logger = logging.getLogger(__name__)


def read_raster(path: Path, fmt: str) -> MedImage:
    """Read a PNG, JPEG or TIFF image.

    Args:
        path: The file.
        fmt: ``"png"``, ``"jpeg"`` or ``"tiff"`` (the content was checked by the caller).

    Returns:
        Grey images as ``(1, X, Y)``, colour ones as ``(3, X, Y)`` (alpha dropped), multi-page TIFF stacks as
        ``(C, X, Y, Z)``; ``array[c, x, y] == pixels[y, x]`` of the file's (row, column) raster. The affine is
        the identity: 1 mm pixels, X along +R and Y along +A, since raster files carry no patient geometry.

    Raises:
        DataError: If the file cannot be decoded or has an unsupported layout.
    """
    try:
        if fmt == "tiff":
            pixels, axes = _read_tiff(path)
        else:
            import skimage.io

            _check_raster_header(path, fmt)
            pixels = np.asarray(skimage.io.imread(str(path)))
            axes = {2: "YX", 3: "YXS"}.get(pixels.ndim, "")
    except DataError:
        raise
    except Exception as exc:  # imageio/Pillow/tifffile raise many types on corrupt files
        raise DataError(f"{path}: cannot decode {fmt.upper()} image: {one_line(exc)}") from exc
    source_dtype = pixels.dtype
    array, photometric = _channel_first(pixels, axes, path)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    meta: dict[str, Any] = {
        "format": fmt,
        "source": "tifffile" if fmt == "tiff" else "scikit-image",
        "modality": None,
        "photometric": photometric,
        "dtype": str(source_dtype),
    }
    return MedImage(array=array, affine=np.eye(4), meta=scrub(meta))


def _check_raster_header(path: Path, fmt: str) -> None:
    """Refuse a PNG/JPEG whose header declares more pixels than allowed, before any is decoded.

    Pillow's own decompression-bomb check only warns below twice its limit; here it is an error.
    """
    import warnings

    from PIL import Image

    from mednas.io._limits import DEFLATE_MAX_RATIO, check_declared_size

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                width, height = im.size
                bands = len(im.getbands())
                bits = 16 if im.mode.startswith("I;16") else (32 if im.mode in ("I", "F") else 8)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise DataError(
                f"{path}: {fmt.upper()} header declares too many pixels: {one_line(exc)}"
            ) from None
    ratio = DEFLATE_MAX_RATIO if fmt == "png" else None
    check_declared_size(
        path,
        (width, height, bands),
        bits // 8,
        available=path.stat().st_size,
        ratio=ratio,
        what=f"{fmt.upper()} header",
    )


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    from mednas.io._limits import check_declared_size

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        uncompressed = all(int(getattr(page, "compression", 1)) == 1 for page in tif.pages[:1])
        check_declared_size(
            path,
            tuple(series.shape),
            series.dtype.itemsize,
            available=path.stat().st_size,
            ratio=1 if uncompressed else None,
            what="TIFF header",
        )
        return np.asarray(series.asarray()), str(series.axes)


def _channel_first(pixels: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, str]:
    """Reorder ``pixels`` (axes named as tifffile names them: Y rows, X columns, S samples) to ``(C, X, Y[, Z])``."""
    if len(axes) != pixels.ndim or "X" not in axes or "Y" not in axes:
        raise DataError(f"{path}: image of shape {pixels.shape} is not supported")
    # Drop length-1 axes other than X/Y, then name what is left.
    keep = [i for i, name in enumerate(axes) if name in "XY" or pixels.shape[i] > 1]
    pixels = pixels.reshape([pixels.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    samples = axes.find("S")
    if samples < 0 and "C" in axes and pixels.shape[axes.index("C")] in (2, 3, 4):
        samples = axes.index("C")
    if samples >= 0:
        n = pixels.shape[samples]
        if n in (2, 4):  # grey + alpha, RGB + alpha: the alpha channel is presentation, not anatomy
            logger.debug("dropping the alpha channel of a %d-sample image", n)
            pixels = np.take(pixels, range(n - 1), axis=samples)
            n -= 1
        if n not in (1, 3):
            raise DataError(
                f"{path}: image with {n} samples per pixel is not supported (grey or RGB expected)"
            )
    rest = [i for i, name in enumerate(axes) if name not in "XY" and i != samples]
    if len(rest) > 1:
        raise DataError(f"{path}: image with axes {axes!r} is not supported (2D, RGB or one stack of slices)")
    order = ([samples] if samples >= 0 else []) + [axes.index("X"), axes.index("Y")] + rest
    array = np.transpose(pixels, order)
    if samples < 0:
        array = array[None]
    photometric = "RGB" if array.shape[0] == 3 else "MONOCHROME2"
    return array, photometric
