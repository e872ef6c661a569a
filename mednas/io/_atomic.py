"""Atomic file writes: every file in a run directory is written to a temporary name, then renamed.

A reader never sees half a file, and a process killed mid-write leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; finished files get the usual permissions.
_FILE_MODE = 0o666 & ~_read_umask()


def _tmp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    return Path(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    ``sync=False`` skips the fsync: readers still never see half a file, but after a power loss the file may
    hold an older version (for progress logs rewritten often, where a sync per line costs more than the line).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str, *, sync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_bytes` for ``sync``)."""
    return write_bytes(path, text.encode("utf-8"), sync=sync)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths and sets appear in metrics and specs; JSON has no type for them.
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Serialise ``obj`` to JSON the way mednas writes it (sorted keys, numpy-aware, NaN as null)."""
    return json.dumps(
        _nan_to_none(obj), indent=indent, sort_keys=True, default=_json_default, allow_nan=False
    )


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON atomically; NaN and infinities become ``null``."""
    return write_text(path, dumps_json(obj) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as YAML (safe dumper, keys in insertion order) atomically."""
    return write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, bounded in size (``$MEDNAS_MAX_LIST_BYTES``) and nesting depth.

    Raises:
        DataError: If the file is larger or nested deeper than the limits (a forged run-directory or bundle file).
        json.JSONDecodeError: If it is not JSON (callers name the file).
    """
    from mednas.errors import DataError
    from mednas.io._limits import MAX_DEPTH, _json_depth_ok, max_list_bytes

    limit = max_list_bytes()
    with open(path, encoding="utf-8") as fh:
        text = fh.read(limit + 1)
    if len(text) > limit:
        raise DataError(
            f"{path}: JSON file is larger than the limit of {limit} bytes (MEDNAS_MAX_LIST_BYTES)"
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: JSON is nested more than {MAX_DEPTH} levels deep") from None
    if not _json_depth_ok(data, MAX_DEPTH):
        raise DataError(f"{path}: JSON is nested more than {MAX_DEPTH} levels deep")
    return data


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the block succeeds.

    If ``path`` appears meanwhile (another process built it), the temporary copy is discarded.

    Example:
        >>> with atomic_dir("out/bundle") as tmp:  # doctest: +SKIP
        ...     (tmp / "a.txt").write_text("x")
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if path.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
