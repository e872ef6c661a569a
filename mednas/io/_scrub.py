"""Patient-identifying values out of free text and data paths, in what mednas writes for others to read.

File and folder names often hold patient names. :func:`scrub_text` replaces paths and image file names in a
message (an exception may quote them); :func:`hide_paths` blanks the path-valued keys of a nested record. The
metadata of every image read is scrubbed by :func:`mednas.io.scrub` (``_phi.py``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

__all__ = ["hide_paths", "scrub_text"]

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~@+-]*[/\\])+[^\s:;,'\"()]*")
_FILE = re.compile(
    r"[^\s/\\:;,'\"()]+\.(?:nii\.gz|nii|nrrd|nhdr|png|jpe?g|tiff?|dcm|dicom|npz|csv|json)\b", re.IGNORECASE
)


def scrub_text(text: Any) -> Any:
    """Replace paths and image file names in a free-text value; other values pass unchanged.

    Example:
        >>> scrub_text("DataError: /data/smith_john/ct.nii.gz: truncated")
        'DataError: <path>: truncated'
    """
    if not isinstance(text, str):
        return text
    return _FILE.sub("<file>", _PATH.sub("<path>", text))


def hide_paths(obj: Any, keys: Collection[str], placeholder: str, key: str = "") -> Any:
    """Return a copy of ``obj`` (nested dicts and lists) with every non-empty string under one of ``keys`` replaced.

    Args:
        obj: A JSON/YAML-like record.
        keys: Names of the keys whose string values are paths.
        placeholder: What a hidden value becomes.
        key: The key ``obj`` sits under (for recursion).

    Example:
        >>> hide_paths({"data": {"path": "/data/smith_john", "n": 3}}, {"path"}, "(hidden)")
        {'data': {'path': '(hidden)', 'n': 3}}
    """
    if isinstance(obj, dict):
        return {k: hide_paths(v, keys, placeholder, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [hide_paths(v, keys, placeholder, key) for v in obj]
    if key in keys and isinstance(obj, str) and obj:
        return placeholder
    return obj
