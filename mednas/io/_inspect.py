"""What ``mednas inspect`` shows: an image's geometry and value range, or the series a DICOM folder holds.

Radiology engineers check a file before they trust it; the summary has the same keys for every format, so an
NRRD, a NIfTI and a DICOM series of one volume can be compared, and it never carries identifying values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mednas.io._image import MedImage

__all__ = ["IMAGE_KEYS", "SERIES_KEYS", "format_summary", "inspect_path", "summarise_image"]

#: Keys of an image summary (``mednas inspect PATH --json`` prints exactly these).
IMAGE_KEYS: tuple[str, ...] = ("shape", "spacing", "affine", "dtype", "min", "max", "mean", "modality")
#: Keys of one series in a folder listing.
SERIES_KEYS: tuple[str, ...] = ("number", "description", "modality", "files", "shape", "key")


def summarise_image(image: MedImage) -> dict[str, Any]:
    """Summarise an image with exactly :data:`IMAGE_KEYS`.

    Returns:
        ``shape`` (spatial, ``[X, Y(, Z)]``), ``spacing`` (mm per axis), ``affine`` (4x4 voxel -> RAS mm),
        ``dtype``, ``min``, ``max``, ``mean`` (over all channels), ``modality`` (``None`` when the format does not
        record it).
    """
    array = np.asarray(image.array)
    integer = array.dtype.kind in "iub"
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    return {
        "shape": list(image.spatial_shape),
        "spacing": [round(float(s), 6) for s in image.spacing],
        "affine": [[round(float(v), 6) + 0.0 for v in row] for row in np.asarray(image.affine, dtype=float)],
        "dtype": str(array.dtype),
        "min": int(lo) if integer else float(lo),
        "max": int(hi) if integer else float(hi),
        "mean": float(array.mean(dtype=np.float64)) if array.size else 0.0,
        "modality": image.meta.get("modality") or None,
    }


def inspect_path(path: str | os.PathLike[str], *, series: str | None = None) -> dict[str, Any]:
    """Inspect a file, a DICOM series folder, or a folder of several series.

    Args:
        path: Image file or DICOM folder.
        series: For a folder of several series, the one to read (key, number or description).

    Returns:
        ``{"image": <summary>, "channels": n, "orientation": "LPS"}`` for one image, or ``{"series": [...]}``
        (each with :data:`SERIES_KEYS`) for a folder holding several series and no ``series`` choice.

    Raises:
        DataError: One line naming the path and the problem (missing, corrupt, unsupported...).
    """
    from mednas.io._dicom import list_series
    from mednas.io._readers import read_image

    path = Path(path)
    if path.is_dir() and series is None:
        infos = list_series(path)
        if len(infos) > 1:
            return {
                "series": [
                    {
                        "number": info.number,
                        "description": info.description,
                        "modality": info.modality or None,
                        "files": info.n_files,
                        "shape": list(info.shape),
                        "key": info.series_key,
                    }
                    for info in infos
                ]
            }
    image = read_image(path, series=series)
    return {"image": summarise_image(image), "channels": image.channels, "orientation": image.orientation}


def format_summary(path: str | os.PathLike[str], result: dict[str, Any]) -> str:
    """Render :func:`inspect_path`'s result as text for the terminal."""
    if "series" in result:
        rows = result["series"]
        lines = [f"{path}: {len(rows)} DICOM series (choose one with --series KEY|NUMBER|DESCRIPTION)"]
        lines.append(f"  {'number':>6}  {'modality':8}  {'files':>5}  {'shape':16}  {'key':12}  description")
        for s in rows:
            number = "-" if s["number"] is None else str(s["number"])
            shape = " x ".join(str(v) for v in s["shape"])
            lines.append(
                f"  {number:>6}  {s['modality'] or '-':8}  {s['files']:>5}  {shape:16}  {s['key']:12}  {s['description']}"
            )
        return "\n".join(lines)
    img = result["image"]
    channels = result.get("channels", 1)
    affine = img["affine"]
    pad = " " * 12
    lines = [
        f"{path}",
        f"  shape     {' x '.join(str(v) for v in img['shape'])}"
        + (f" ({channels} channels)" if channels != 1 else ""),
        f"  spacing   {' x '.join(f'{v:.6g}' for v in img['spacing'])} mm",
        f"  orient.   {result.get('orientation', '?')}",
        "  affine    " + ("\n" + pad).join(" ".join(f"{v:>11.4f}" for v in row) for row in affine),
        f"  dtype     {img['dtype']}",
        f"  min       {img['min']:.6g}",
        f"  max       {img['max']:.6g}",
        f"  mean      {img['mean']:.6g}",
        f"  modality  {img['modality'] or 'not recorded'}",
    ]
    return "\n".join(lines)
