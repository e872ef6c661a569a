"""Content hashes of a bundle's training and validation images, so external validation can find overlap.

``configs/data_hashes.json`` lists, per split, the pixel hash of each case (:func:`mednas.data.pixel_hash`, the
hash the data layer finds duplicates across splits with; never a path, name or key), sorted so the order says
nothing about the cases. ``mednas evaluate`` hashes its images the same way and counts how many the model was
trained or validated on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import MednasError

logger = logging.getLogger(__name__)

__all__ = ["DATA_HASHES", "HASH_METHOD", "image_content_hash", "read_data_hashes", "write_data_hashes"]

#: Where the bundle keeps the hashes (inside ``checksums.sha256`` and the digest like every other file).
DATA_HASHES = "configs/data_hashes.json"
HASH_METHOD = (
    "mednas.data.pixel_hash of the first channel's decoded pixel array as read (dtype, shape and values; "
    "BLAKE2b, 80 bits), as the data layer finds duplicates across splits"
)


def image_content_hash(arrays: Sequence[np.ndarray]) -> str:
    """Hash a case's decoded pixels as the fingerprint does (first channel), so overlap and duplicates agree.

    Args:
        arrays: The case's channel images as :func:`mednas.io.read_image` gives them, ``(C, *spatial)`` each.

    Example:
        >>> image_content_hash([np.zeros((1, 4, 4), np.uint8)]) == image_content_hash([np.zeros((1, 4, 4), np.uint8)])
        True
    """
    from mednas.data import pixel_hash

    return pixel_hash(np.asarray(arrays[0]))


def write_data_hashes(path: Path, rd: Any, task: Any) -> dict[str, Any]:
    """Hash the run's training and validation images (from ``splits.json``) into ``path``.

    Data that can no longer be read (moved, deleted) does not fail the export: the file then says why the hashes
    were not recorded, and ``mednas evaluate`` reports overlap as not recorded.

    Returns:
        What was written.
    """
    from mednas.data import load_dataset, read_or_create_salt
    from mednas.io import read_image, write_json

    record: dict[str, Any] = {"format_version": 1, "method": HASH_METHOD}
    try:
        splits = rd.read_json(rd.splits)
        # The fingerprint recorded every case's pixel hash when the search read the data: no image is read again.
        fingerprint = rd.read_json(rd.fingerprint) if rd.fingerprint.exists() else {}
        known = {
            c.get("case"): c.get("pixels") for c in fingerprint.get("cases") or [] if isinstance(c, dict)
        }
        wanted = [k for split in ("train", "val") for k in splits.get(split) or []]
        by_key = None
        if not all(known.get(k) for k in wanted):  # a run from before the fingerprint held pixel hashes
            by_key = load_dataset(task, read_or_create_salt(rd), run_dir=rd.root).by_key()
        for split in ("train", "val"):
            keys = splits.get(split) or []
            if by_key is None:
                hashes = {str(known[k]) for k in keys}
            else:
                hashes = {image_content_hash([read_image(p).array for p in by_key[k].images]) for k in keys}
            record[split] = sorted(hashes)
            record[f"n_{split}"] = len(keys)
        record["source"] = "images read again at export" if by_key is not None else "fingerprint.json"
    except (MednasError, OSError, KeyError, ValueError) as exc:
        reason = f"{type(exc).__name__}: the run's images could not be read again at export"
        logger.warning("training-data hashes not recorded in the bundle (%s)", reason)
        record = {"format_version": 1, "method": HASH_METHOD, "not_recorded": reason}
    write_json(path, record)
    return record


def read_data_hashes(bundle: Path) -> dict[str, Any] | None:
    """Return the bundle's hashes (``{"train": [...], "val": [...]}``), or ``None`` when it has none recorded."""
    from mednas.io import read_json

    path = Path(bundle) / DATA_HASHES
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "not_recorded" in data or not isinstance(data.get("train"), list):
        return None
    return data
