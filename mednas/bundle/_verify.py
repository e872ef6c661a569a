"""Checks that make a bundle trustworthy: checksums of every file, its digest and signature, MONAI's metadata schema,
the network's in/out.

``checksums.sha256`` is in ``sha256sum`` format (``sha256sum -c checksums.sha256`` checks it too). It checks the files
against itself, so it detects accidents, not attacks: whoever edits a file can recompute it. What an attacker cannot
recompute is the **bundle digest** (:func:`bundle_digest`: one SHA-256 over the sorted relative paths and the SHA-256
of each listed file, computed from the files) once a validation team has pinned it (``--expect-digest``), or an
HMAC-SHA256 of that digest under a key the team holds (``signature.json``, :func:`sign_bundle`). The metadata
schema is MONAI's ``meta_schema_20240725.json``; mednas does not ship a copy (its licence is not stated where it
is published) and never downloads it: pass its path (``--schema`` or ``$MEDNAS_BUNDLE_SCHEMA``) to check against
it, otherwise the schema's required fields and ``network_data_format`` are checked by mednas itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
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
    "KEY_ENV",
    "SIGNATURE",
    "SCHEMA_ENV",
    "SCHEMA_URL",
    "BundleError",
    "bundle_digest",
    "check_digest",
    "check_metadata",
    "find_schema",
    "sha256_file",
    "sign_bundle",
    "verify_signature",
    "verify_checksums",
    "verify_net_in_out",
    "write_checksums",
]

CHECKSUMS = "checksums.sha256"
SIGNATURE = "signature.json"
#: Path of a key file that ``mednas export`` signs bundles with when ``--sign-key`` is not given.
KEY_ENV = "MEDNAS_BUNDLE_KEY"
_MIN_KEY_BYTES = 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SCHEMA_ENV = "MEDNAS_BUNDLE_SCHEMA"
SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
#: The schema's required top-level fields (MONAI meta_schema_20240725).
REQUIRED_FIELDS = (
    "schema",
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
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
    return sorted(
        rel
        for p in root.rglob("*")
        if p.is_file() and (rel := p.relative_to(root).as_posix()) not in (CHECKSUMS, SIGNATURE)
    )


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
            raise BundleError(
                f"{listing}: line {number} is not '<sha256>  <relative path>'; refusing the bundle"
            )
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
            raise BundleError(
                f"{root / rel}: not listed in {CHECKSUMS} (added after export); refusing the bundle"
            )
    return digests


def bundle_digest(root: str | os.PathLike[str], digests: dict[str, str] | None = None) -> str:
    """Return the bundle's digest: SHA-256 over ``"<sha256>  <relative path>\\n"`` for every file, sorted by path.

    It equals ``sha256sum checksums.sha256`` of the listing ``mednas export`` writes, so a validation team can
    check it without mednas. Computed from the files, never read from the listing.

    Args:
        root: The bundle folder.
        digests: Relative path -> SHA-256 of the files to cover, as :func:`verify_checksums` returns them after
            hashing each file (default: every file except ``checksums.sha256`` and ``signature.json``, hashed now).
    """
    root = Path(root)
    if digests is None:
        digests = {rel: sha256_file(root / rel) for rel in _files(root)}
    text = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_digest(root: str | os.PathLike[str], digest: str, expect: str) -> None:
    """Refuse a bundle whose digest is not the pinned one.

    Raises:
        BundleError: One line naming the bundle, for a malformed or different ``expect``.
    """
    want = expect.strip().lower()
    if not _HEX64.match(want):
        raise BundleError(f"--expect-digest: {expect!r} is not a SHA-256 digest (64 hex digits)")
    if not hmac.compare_digest(want, digest):
        raise BundleError(f"{root}: bundle digest {digest} is not the expected {want}; refusing the bundle")


def _read_key(path: str | os.PathLike[str], where: str) -> bytes:
    key_path = Path(path)
    try:
        key = key_path.read_bytes().strip()
    except OSError as exc:
        raise MednasError(f"{key_path}: cannot read the key file ({where}): {exc.strerror or exc}") from None
    if len(key) < _MIN_KEY_BYTES:
        raise MednasError(
            f"{key_path}: a signing key needs at least {_MIN_KEY_BYTES} bytes ({where}); "
            "make one with: openssl rand -hex 32 > KEYFILE"
        )
    return key


def _hmac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def sign_bundle(
    root: str | os.PathLike[str], key_file: str | os.PathLike[str], *, where: str = "--sign-key"
) -> Path:
    """Write ``signature.json``: an HMAC-SHA256 of the bundle digest under the key in ``key_file``.

    Returns:
        The signature file.
    """
    from mednas.io import write_json

    root = Path(root)
    key = _read_key(key_file, where)
    digest = bundle_digest(root)
    record = {
        "algorithm": "HMAC-SHA256",
        "digest": digest,
        "hmac": _hmac(key, digest),
        "key_id": hashlib.sha256(key).hexdigest()[:16],
        "note": "hmac = HMAC-SHA256(key, digest as ASCII hex); digest = sha256sum of checksums.sha256",
    }
    return write_json(root / SIGNATURE, record)


def verify_signature(root: str | os.PathLike[str], digest: str, key_file: str | os.PathLike[str]) -> None:
    """Refuse a bundle without a ``signature.json`` that the key in ``key_file`` made for this digest.

    Raises:
        BundleError: One line naming the signature file, for a missing, malformed or wrong signature.
    """
    root = Path(root)
    key = _read_key(key_file, "--verify-key")
    path = root / SIGNATURE
    if not path.is_file():
        raise BundleError(f"{path}: missing; the bundle is not signed, refusing it (--verify-key)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        mac = str(record["hmac"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise BundleError(f"{path}: not a mednas signature; refusing the bundle") from None
    if not hmac.compare_digest(mac, _hmac(key, digest)):
        raise BundleError(
            f"{path}: signature does not match this bundle under {Path(key_file)} (wrong key, or files "
            "changed after signing); refusing the bundle"
        )


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
            monai_verify(
                net_id="network_def",
                meta_file=str(root / "configs" / "metadata.json"),
                config_file=str(root / "configs" / "inference.json"),
                device=device,
                bundle_root=str(root),  # an ensemble's network_def loads models/model.ts from there
            )
    except Exception as exc:  # noqa: BLE001 - MONAI raises ValueError/KeyError/RuntimeError
        raise BundleError(f"{root}: MONAI verify_net_in_out failed: {_first_line(exc)}") from exc


@contextlib.contextmanager
def quiet_monai() -> Iterator[None]:
    """Keep MONAI's input summaries, hash and GPU-decoder notices out of mednas's output (failures still raise)."""
    names = (
        "monai.bundle",
        "monai.bundle.scripts",
        "monai.apps",
        "monai.apps.utils",
        "monai.data.nvimgcodec_pydicom_plugin",
    )
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
