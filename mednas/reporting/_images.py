"""Case pictures for the report: windowed grey images with ground-truth and prediction overlays, as PNG data URIs.

PNGs are encoded here with :mod:`zlib` (no imaging library needed) and embedded in the HTML, so the report stays
one file. Only arrays go in: no file name or patient identifier can reach a picture.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["GT_COLOUR", "PRED_COLOUR", "grey_rgb", "overlay", "png_data_uri", "slices_2d"]

GT_COLOUR = (46, 204, 64)  # ground truth: green
PRED_COLOUR = (255, 65, 54)  # prediction: red; where both agree the blend reads yellow


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an ``(H, W, 3)`` uint8 image as a ``data:image/png;base64,...`` URI.

    Example:
        >>> png_data_uri(np.zeros((2, 3, 3), dtype=np.uint8)).startswith("data:image/png;base64,iVBORw0KGgo")
        True
    """
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grey_rgb(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Window a 2D float image (1st-99th percentile unless given) to an ``(H, W, 3)`` uint8 grey picture."""
    img = np.asarray(image, dtype=np.float32)
    finite = img[np.isfinite(img)]
    lo = float(np.percentile(finite, 1)) if low is None and finite.size else (low or 0.0)
    hi = float(np.percentile(finite, 99)) if high is None and finite.size else (high or 1.0)
    if hi <= lo:
        hi = lo + 1.0
    grey = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    g8 = (grey * 255).round().astype(np.uint8)
    return np.repeat(g8[..., None], 3, axis=2)


def _edge(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def overlay(
    rgb: np.ndarray,
    truth: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    alpha: float = 0.35,
) -> np.ndarray:
    """Tint ground truth green and prediction red (both: yellow) over a grey picture, with solid outlines.

    Args:
        rgb: ``(H, W, 3)`` uint8 picture.
        truth: ``(H, W)`` mask (non-zero = finding) or None.
        prediction: ``(H, W)`` mask or None.
        alpha: Opacity of the fill.

    Returns:
        A new ``(H, W, 3)`` uint8 picture.
    """
    out = rgb.astype(np.float32).copy()
    for mask, colour in ((truth, GT_COLOUR), (prediction, PRED_COLOUR)):
        if mask is None:
            continue
        m = np.asarray(mask) > 0
        if not m.any():
            continue
        c = np.array(colour, dtype=np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * c
        out[_edge(m)] = c
    return out.clip(0, 255).astype(np.uint8)


def slices_2d(volume: np.ndarray, centre: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Cut axial, coronal and sagittal slices of a ``(X, Y, Z)`` RAS volume through ``centre`` (default: middle).

    Each slice is oriented for display: anterior (axial) or superior (coronal, sagittal) up.
    """
    v = np.asarray(volume)
    cx, cy, cz = centre if centre is not None else tuple(s // 2 for s in v.shape[:3])
    return {
        "axial": np.flipud(v[:, :, cz].T),
        "coronal": np.flipud(v[:, cy, :].T),
        "sagittal": np.flipud(v[cx, :, :].T),
    }
