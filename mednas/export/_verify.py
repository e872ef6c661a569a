"""Checks that make a bundle trustworthy: checksums of every file, MONAI's metadata schema, the network's in/out.

``checksums.sha256`` is in ``sha256sum`` format (``sha256sum -c checksums.sha256`` checks it too). The metadata
schema is MONAI's ``meta_schema_20240725.json``; mednas does not ship a copy (its licence is not stated where it
is published) and never downloads it: pass its path (``--schema`` or ``$MEDNAS_BUNDLE_SCHEMA``) to check against
it, otherwise the schema's required fields and ``network_data_format`` are checked by mednas itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from mednas.errors import MednasError

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKSUMS",
    "SCHEMA_ENV",
    "SCHEMA_URL",
    "BundleError",
    "check_metadata",
    "find_schema",
    "sha256_file",
    "verify_checksums",
    "verify_net_in_out",
    "write_checksums",
]

CHECKSUMS = "checksums.sha256"
SCHEMA_ENV = "MEDNAS_BUNDLE_SCHEMA"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: The schema's required top-level fields (MONAI meta_schema_20240725).
REQUIRED_FIELDS = ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                   "task", "description", "authors", "copyright", "network_data_format")
_TENSOR_FIELDS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")
# Folders whose contents decide what the model computes: an unlisted file there is refused, not ignored.
_GUARDED = ("configs", "models")
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class BundleError(MednasError):
    """A bundle is missing, incomplete or changed since export (exit status 5)."""

    exit_code = 5


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(root: str | os.PathLike[str]) -> Path:
    """Write ``checksums.sha256`` listing every other file under ``root`` (sorted, ``sha256sum`` format)."""
    from mednas.io import write_text

    root = Path(root)
    lines = [f"{sha256_file(root / rel)}  {rel}" for rel in _files(root)]
    return write_text(root / CHECKSUMS, "\n".join(lines) + "\n")


def verify_checksums(root: str | os.PathLike[str], *, required: Iterable[str] = ()) -> dict[str, str]:
    """Check every file listed in ``checksums.sha256`` and that ``configs/`` and ``models/`` hold nothing else.

    Args:
        root: The bundle folder.
        required: Files that must be listed (e.g. ``models/model.pt``).

    Returns:
        Relative path -> digest of every listed file.

    Raises:
        BundleError: One line naming the first missing, changed, unlisted or malformed entry.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    listing = root / CHECKSUMS
    if not listing.is_file():
        raise BundleError(f"{listing}: missing; refusing a bundle whose files cannot be checked")
    digests: dict[str, str] = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        rel = m.group(2) if m else ""
        if not m or rel.startswith("/") or ".." in Path(rel).parts:
            raise BundleError(f"{listing}: line {number} is not '<sha256>  <relative path>'; refusing the bundle")
        digests[rel] = m.group(1)
    for rel in required:
        if rel not in digests:
            raise BundleError(f"{listing}: {rel} is not listed; refusing the bundle")
    for rel, digest in digests.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{path}: listed in {CHECKSUMS} but missing; refusing the bundle")
        if sha256_file(path) != digest:
            raise BundleError(f"{path}: checksum mismatch (changed after export); refusing the bundle")
    for rel in _files(root):
        if rel.split("/", 1)[0] in _GUARDED and rel not in digests:
            raise BundleError(f"{root / rel}: not listed in {CHECKSUMS} (added after export); refusing the bundle")
    return digests


def find_schema(schema: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the MONAI metadata schema to check against: ``schema``, else ``$MEDNAS_BUNDLE_SCHEMA``, else None.

    Raises:
        MednasError: If a path is given (or set in the environment) but is not a file.
    """
    chosen = schema or os.environ.get(SCHEMA_ENV)
    if not chosen:
        return None
    path = Path(chosen)
    if not path.is_file():
        where = "--schema" if schema else f"${SCHEMA_ENV}"
        raise MednasError(f"{path}: MONAI metadata schema not found ({where}); mednas never downloads it")
    return path


def check_metadata(meta_file: str | os.PathLike[str], schema: Path | None) -> str:
    """Check ``configs/metadata.json``: against MONAI's schema with ``monai.bundle.verify_metadata`` when given,
    else the schema's required fields and ``network_data_format`` structure.

    Returns:
        What was checked, for the record: ``"MONAI schema <file name>"`` or ``"required fields (no schema file)"``.

    Raises:
        BundleError: With the first problem found.
    """
    from mednas.io import read_json

    meta = read_json(meta_file)
    if schema is not None:
        from monai.bundle import verify_metadata

        try:
            # The file exists, so MONAI's download step only notes that; nothing is fetched.
            with quiet_monai():
                verify_metadata(meta_file=str(meta_file), filepath=str(schema))
        except Exception as exc:  # noqa: BLE001 - jsonschema's ValidationError and friends
            raise BundleError(f"{meta_file}: fails MONAI's metadata schema: {_first_line(exc)}") from exc
        return f"MONAI schema {schema.name}"
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise BundleError(f"{meta_file}: missing MONAI metadata fields {missing}")
    fmt = meta["network_data_format"]
    for side, name in (("inputs", "image"), ("outputs", "pred")):
        entry = (fmt.get(side) or {}).get(name)
        if not isinstance(entry, dict) or any(k not in entry for k in _TENSOR_FIELDS):
            raise BundleError(f"{meta_file}: network_data_format.{side}.{name} needs {list(_TENSOR_FIELDS)}")
    return "required fields (no schema file)"


def verify_net_in_out(bundle: str | os.PathLike[str], device: str = "cpu") -> None:
    """Run ``monai.bundle.verify_net_in_out`` on the bundle's ``network_def`` (in this process).

    Raises:
        BundleError: If MONAI's check fails.
    """
    from monai.bundle import verify_net_in_out as monai_verify

    root = Path(bundle)
    try:
        with quiet_monai():
            monai_verify(net_id="network_def", meta_file=str(root / "configs" / "metadata.json"),
                         config_file=str(root / "configs" / "inference.json"), device=device)
    except Exception as exc:  # noqa: BLE001 - MONAI raises ValueError/KeyError/RuntimeError
        raise BundleError(f"{root}: MONAI verify_net_in_out failed: {_first_line(exc)}") from exc


@contextlib.contextmanager
def quiet_monai() -> Iterator[None]:
    """Keep MONAI's input summaries, hash and GPU-decoder notices out of mednas's output (failures still raise)."""
    names = ("monai.bundle", "monai.bundle.scripts", "monai.apps", "monai.apps.utils", "monai.data.nvimgcodec_pydicom_plugin")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]

