"""Limits on what a file may make mednas do: image sizes checked before allocation, geometry that can be
inverted, and YAML/JSON parsed with bounds on size, nesting depth and alias expansion.

Files arrive from elsewhere; a 66-byte header claiming a gigabyte, a billion-laughs YAML or a 20,000-deep
list must be refused with one line naming the file, never by running out of memory or stack.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import DataError, MednasError

__all__ = [
    "DEFLATE_MAX_RATIO",
    "MAX_DEPTH",
    "check_declared_size",
    "check_geometry",
    "load_json_bounded",
    "load_yaml_bounded",
    "max_image_bytes",
    "read_text_bounded",
]

#: Default of ``MEDNAS_MAX_IMAGE_BYTES``: the most decoded voxel bytes one image may declare.
DEFAULT_MAX_IMAGE_BYTES = 4 * 2**30
#: deflate (gzip, zlib, PNG) cannot expand more than about 1032:1; a header promising more lies.
DEFLATE_MAX_RATIO = 1032
#: Deepest nesting of lists and mappings accepted in YAML and JSON inputs (tasks need about 6).
MAX_DEPTH = 100
#: Most nodes a YAML document may expand to once its aliases are followed (tasks have a few hundred).
MAX_YAML_NODES = 100_000
#: Most bytes of a task or preset YAML file.
MAX_YAML_BYTES = 8 * 2**20
#: Default of ``MEDNAS_MAX_LIST_BYTES``: the most bytes of a datalist, CSV sheet or other JSON input.
DEFAULT_MAX_LIST_BYTES = 512 * 2**20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    match = _SIZE.match(raw)
    if not match:
        raise MednasError(f"${name}={raw!r}: expected a byte count such as 4294967296 or 4G")
    value = (
        float(match.group(1)) * 1024 ** "KMGT".find(match.group(2).upper())
        if match.group(2)
        else float(match.group(1))
    )
    if value < 1:
        raise MednasError(f"${name}={raw!r}: must be at least 1 byte")
    return int(value)


def max_image_bytes() -> int:
    """The most bytes one decoded image may declare: ``$MEDNAS_MAX_IMAGE_BYTES`` (``4G`` style), default 4 GiB."""
    return _env_bytes("MEDNAS_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def check_declared_size(
    path: Path | str,
    shape: tuple[int, ...] | list[int],
    itemsize: int,
    *,
    available: int | None = None,
    ratio: float | None = None,
    what: str = "header",
) -> int:
    """Refuse an image whose header declares more data than its file can hold, or more than the maximum.

    Called before any voxel buffer is allocated.

    Args:
        path: The file, for the message.
        shape: Declared dimensions (any order).
        itemsize: Bytes per stored value (samples included if not in ``shape``).
        available: Bytes of (possibly compressed) pixel data in the file, if known.
        ratio: Largest possible expansion of ``available`` (1 for raw data, :data:`DEFLATE_MAX_RATIO` for
            deflate); ``None``: only the maximum applies.
        what: What declared the size (``header``, ``DICOM Rows x Columns``...).

    Returns:
        The declared number of bytes.

    Raises:
        DataError: Naming ``path``, the declared size and the limit it breaks.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise DataError(f"{path}: {what} declares a negative dimension {tuple(dims)}")
    declared = math.prod(dims) * max(int(itemsize), 1)
    dims_text = " x ".join(map(str, dims))
    if available is not None and ratio is not None and declared > available * ratio + 1024:
        how = "holds only" if ratio == 1 else f"can hold at most (compressed, ratio {ratio:g}:1)"
        raise DataError(
            f"{path}: {what} declares {dims_text} ({_fmt_bytes(declared)}) but the file {how} "
            f"{_fmt_bytes(available * ratio)}: truncated or corrupt (or forged)"
        )
    limit = max_image_bytes()
    if declared > limit:
        raise DataError(
            f"{path}: {what} declares {dims_text} ({_fmt_bytes(declared)}), more than the limit of "
            f"{_fmt_bytes(limit)} per image (raise MEDNAS_MAX_IMAGE_BYTES if this image is genuine)"
        )
    return declared


def check_geometry(affine: Any, spatial_dims: int, path: Path | str) -> None:
    """Refuse a voxel-to-world affine that is not finite or cannot be inverted.

    Raises:
        DataError: Naming ``path``: non-finite entries, a zero-length axis, or axes that are parallel.
    """
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4):
        raise DataError(f"{path}: image geometry is not a 4x4 affine (shape {matrix.shape})")
    if not np.isfinite(matrix).all():
        raise DataError(
            f"{path}: image geometry (affine) has NaN or infinite entries; mednas needs a finite one"
        )
    axes = matrix[:3, :3]
    norms = np.sqrt((axes**2).sum(axis=0))
    zero = [i for i in range(spatial_dims) if norms[i] == 0]
    if zero:
        names = ", ".join("xyz"[i] for i in zero)
        raise DataError(f"{path}: image geometry (affine) is singular: voxel axis {names} has zero length")
    scaled = axes / np.where(norms > 0, norms, 1.0)
    if spatial_dims == 2:
        degenerate = bool(np.linalg.norm(np.cross(scaled[:, 0], scaled[:, 1])) < 1e-6)
    else:
        degenerate = bool(abs(np.linalg.det(scaled)) < 1e-6)
    if degenerate:
        raise DataError(
            f"{path}: image geometry (affine) is singular: its voxel axes are parallel or coplanar"
        )


# --------------------------------------------------------------------------------------------- text formats


def read_text_bounded(path: Path | str, limit: int, error: type[MednasError], what: str) -> str:
    """Read a UTF-8 text file of at most ``limit`` bytes (checked before reading)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{path}: is a folder, expected a {what} file")
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise error(f"{path}: not a regular file, expected a {what} file")
        size = info.st_size
        if size > limit:
            raise error(
                f"{path}: {what} file is {_fmt_bytes(size)}, more than the limit of {_fmt_bytes(limit)}"
            )
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > limit:  # a FIFO or a file that grew
        raise error(f"{path}: {what} file is more than the limit of {_fmt_bytes(limit)}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} file is not UTF-8 text (byte {exc.start})") from None


def max_list_bytes() -> int:
    """The most bytes of a datalist, sheet or JSON input: ``$MEDNAS_MAX_LIST_BYTES``, default 512 MiB."""
    return _env_bytes("MEDNAS_MAX_LIST_BYTES", DEFAULT_MAX_LIST_BYTES)


def _json_depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def load_json_bounded(
    path: Path | str,
    *,
    error: type[MednasError] = DataError,
    what: str = "JSON",
    limit: int | None = None,
    text: str | None = None,
) -> Any:
    """Parse a JSON file with bounds on size (``$MEDNAS_MAX_LIST_BYTES``) and nesting (:data:`MAX_DEPTH`).

    Raises:
        error: One line naming ``path``: missing, too large, not UTF-8, not JSON, nested too deeply.
    """
    if text is None:
        text = read_text_bounded(path, max_list_bytes() if limit is None else limit, error, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid {what}: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise error(f"{path}: {what} is nested more than {MAX_DEPTH} levels deep") from None
    if not _json_depth_ok(data, MAX_DEPTH):
        raise error(f"{path}: {what} is nested more than {MAX_DEPTH} levels deep")
    return data


def _bounded_loader_class() -> type:
    import yaml
    from yaml.composer import Composer
    from yaml.events import AliasEvent

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that refuses deep nesting and documents whose aliases expand beyond a node budget."""

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(AliasEvent):
                return Composer.compose_node(self, parent, index)
            self._depth += 1
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _YamlLimit(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            try:
                return Composer.compose_node(self, parent, index)
            finally:
                self._depth -= 1

        def compose_document(self) -> Any:
            node = super().compose_document()
            if node is not None and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise _YamlLimit(
                    f"expands to more than {MAX_YAML_NODES:,} values through its aliases (&anchor / *alias); "
                    "a 'billion laughs' document?",
                    None,
                )
            return node

    return BoundedLoader


class _YamlLimit(Exception):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


def _expanded_size(root: Any, cap: int) -> int:
    """Count nodes as if every alias were copied out, memoised per node, stopping above ``cap``."""
    from yaml.nodes import MappingNode, SequenceNode

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[id(node)] = 1
            continue
        if done:
            sizes[id(node)] = min(cap + 1, 1 + sum(sizes.get(id(c), 0) for c in children))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes.get(id(root), 0)


_LOADER: type | None = None


def load_yaml_bounded(
    text: str, source: str, error: type[MednasError], *, invalid_as_text: bool = False
) -> Any:
    """Parse YAML with the safe loader, bounded in depth (:data:`MAX_DEPTH`) and alias expansion.

    Args:
        text: The YAML text.
        source: File or option named in errors.
        error: The :class:`MednasError` subclass to raise.
        invalid_as_text: Return ``text`` itself when it is not valid YAML (``--set`` values); limits still apply.

    Raises:
        error: ``<source>: line N: <problem>`` for invalid YAML or a broken limit.
    """
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _bounded_loader_class()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise error(f"{source}: YAML text is more than the limit of {_fmt_bytes(MAX_YAML_BYTES)}")
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except _YamlLimit as exc:
        where = f" line {exc.mark.line + 1}:" if exc.mark is not None else ""
        raise error(f"{source}:{where} YAML {exc.problem}") from None
    except yaml.YAMLError as exc:
        if invalid_as_text:
            return text
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{source}:{where}: {problem}") from None
    except RecursionError:
        raise error(f"{source}: YAML is nested more than {MAX_DEPTH} levels deep") from None
