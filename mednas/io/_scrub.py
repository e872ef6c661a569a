"""Patient-identifying values out of free text and data paths, in what mednas writes for others to read.

File and folder names often hold patient names. :func:`scrub_text` replaces paths and image file names in a
message (an exception may quote them); :func:`hide_paths` blanks the path-valued keys of a nested record. The
metadata of every image read is scrubbed by :func:`mednas.io.scrub` (``_phi.py``). A database password never
appears either: :func:`redact_url` and :func:`redact_in_text` mask it wherever a storage URL is shown.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

__all__ = ["hide_paths", "redact_in_text", "redact_url", "scrub_text"]

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


def redact_url(url: str) -> str:
    """A storage URL with its password masked (user and host kept); other strings pass unchanged.

    Example:
        >>> redact_url("postgresql://mednas:s3cret@db.example.org:5432/nas")
        'postgresql://mednas:***@db.example.org:5432/nas'
    """
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if "/" in creds or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def redact_in_text(text: str, url: str) -> str:
    """``text`` (an error message from a database driver, say) with ``url``'s password masked wherever it appears.

    Example:
        >>> redact_in_text("auth failed for s3cret", "postgresql://u:s3cret@h/db")
        'auth failed for ***'
    """
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return redact_url(text)
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text
