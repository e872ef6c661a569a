"""DICOM reading: a folder of slices, or one single- or multi-frame file, into a :class:`MedImage` in RAS.

pydicom decodes pixels but leaves slice order, geometry and value mapping to its caller; they are done here as
dcm2niix does them: slices ordered along the slice normal, LPS turned into RAS, rescale applied.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednas.errors import DataError
from mednas.io._image import MedImage
from mednas.io._phi import scrub
from mednas.io._readers import one_line

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["SeriesInfo", "list_series", "read_dicom_file", "read_dicom_headers", "read_dicom_series"]

logger = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Projection radiography: the VOI LUT or window in the file is part of the image as radiologists read it.
_RADIOGRAPHY = frozenset({"CR", "DX", "MG", "IO", "PX", "RG"})
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIP_HINT = 'pip install "mednas[dicom]"'
# Two slices closer than this along the normal are one position (mm).
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder, described without identifying values.

    Attributes:
        series_key: First 12 hex digits of the SHA-256 of the SeriesInstanceUID: stable, short, and accepted by
            ``read_image(folder, series=...)``. It is an unsalted hash, so it only links back to a UID that the
            holder already knows.
        number: SeriesNumber, or ``None``.
        description: SeriesDescription (free text set by the scanner), ``""`` when absent.
        modality: DICOM Modality (``"CT"``, ``"MR"``, ...), ``""`` when absent.
        n_files: Number of image files in the series.
        shape: ``(X, Y, Z)``: columns, rows and slices (frames of all files together), as ``read_image`` returns
            them.
    """

    series_key: str
    number: int | None
    description: str
    modality: str
    n_files: int
    shape: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    def label(self) -> str:
        """One-line summary used in messages, e.g. ``#3 'AX T1' MR 24 slices (key 1a2b3c4d5e6f)``."""
        number = "#?" if self.number is None else f"#{self.number}"
        return (
            f"{number} {self.description!r} {self.modality or 'unknown modality'} {self.shape[2]} "
            f"slice{'s' if self.shape[2] != 1 else ''} (key {self.series_key})"
        )


def read_dicom_series(folder: Path, *, series: str | None = None) -> MedImage:
    """Read one series from a folder (searched recursively) as a 3D image ``(C, X, Y, Z)``.

    Args:
        folder: Folder holding the series' files, possibly mixed with other series and non-DICOM files.
        series: SeriesInstanceUID, ``series_key``, SeriesNumber or SeriesDescription (case-insensitive) of the
            series to read; needed when the folder holds more than one series.

    Returns:
        The volume, slices ordered by position along the slice normal (ascending), values after the modality
        rescale, affine in RAS.

    Raises:
        DataError: If the folder holds no DICOM image, the series choice is missing or ambiguous, or the slices
            do not form one volume.
    """
    groups = _scan(folder)
    datasets = _select(folder, groups, series)
    return _read_datasets(datasets, where=folder, force_3d=True)


def read_dicom_file(path: Path) -> MedImage:
    """Read one DICOM file: single-frame gives a 2D image ``(C, X, Y)``, multi-frame a 3D one ``(C, X, Y, Z)``.

    Raises:
        DataError: If the file is not DICOM, is truncated or corrupt, or holds no pixel data.
    """
    ds = _read_header(path)
    if not any(tag in ds for tag in _PIXEL_TAGS):
        sop = _sop_name(ds)
        raise DataError(f"{path}: DICOM file has no pixel data ({sop}; truncated, or not an image)")
    return _read_datasets([ds], where=path, force_3d=False)


def read_dicom_headers(
    path: str | Path, *, series: str | None = None
) -> tuple[list[Dataset], list[tuple[int, int]]]:
    """Read the headers of the DICOM series (folder) or file that :func:`read_image` reads, and its slice order.

    For writers of objects that reference the source images (a DICOM SEG): slice ``k`` of the volume
    ``read_image(path)`` returns (its last axis) came from frame ``frames[k][1]`` of ``datasets[frames[k][0]]``.

    Args:
        path: A DICOM series folder or a DICOM file.
        series: As for :func:`read_image`.

    Returns:
        ``(datasets, frames)``: the headers (pixel data not loaded), and one ``(dataset index, frame index)`` per
        slice, in the reader's slice order.

    Raises:
        DataError: As :func:`read_image` does for the same path.
    """
    path = Path(path)
    datasets = _select(path, _scan(path), series) if path.is_dir() else [_read_header(path, defer=True)]
    frames = [frame for ds in datasets for frame in _frames_of(ds)]
    order = _geometry(frames, path).order
    position = {id(ds): i for i, ds in enumerate(datasets)}
    return datasets, [(position[id(frames[i].ds)], frames[i].index) for i in order]


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """List the image series in a DICOM folder (searched recursively), without identifying values.

    Args:
        folder: A folder of DICOM files.

    Returns:
        One :class:`SeriesInfo` per series, ordered by series number then description.

    Raises:
        DataError: If ``folder`` is not a folder or holds no DICOM image.

    Example:
        >>> for info in list_series("study/"):  # doctest: +SKIP
        ...     print(info.label())
        #2 'AX T1' MR 24 slices (key 1a2b3c4d5e6f)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    return [_series_info(uid, datasets) for uid, datasets in _scan(folder).items()]


# --- reading headers -------------------------------------------------------------------------------------------


def _read_header(path: Path, *, defer: bool = False) -> Dataset:
    """Read a DICOM file's dataset (pixel data deferred when ``defer``), wrapping every failure."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        head = _head(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if not head:
        raise DataError(f"{path}: file is empty (0 bytes)")
    # Files without the 128-byte preamble exist (old ACR-NEMA style); accept them only when they start with a
    # group 0002 or 0008 tag, so a text file is not "read" as DICOM by force.
    force = not _has_preamble(head) and head[:2] in (b"\x02\x00", b"\x08\x00")
    try:
        ds = pydicom.dcmread(path, force=force, defer_size="2 KB" if defer else None)
        if force and "TransferSyntaxUID" not in ds.file_meta:
            # Without file meta, pydicom guessed the encoding while reading; record it so pixels can decode.
            from pydicom import uid

            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                uid.ImplicitVRLittleEndian
                if implicit
                else uid.ExplicitVRLittleEndian
                if little
                else uid.ExplicitVRBigEndian
            )
        return ds
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file (no 'DICM' marker)") from exc
    except Exception as exc:  # pydicom raises many types on truncated or corrupt files
        raise DataError(f"{path}: cannot read DICOM (truncated or corrupt file): {one_line(exc)}") from exc


def _head(path: Path, n: int = 132) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _scan(folder: Path) -> dict[str, list[Dataset]]:
    """Read the headers of every DICOM image under ``folder``, grouped by SeriesInstanceUID."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    skipped: Counter[str] = Counter()
    groups: dict[str, list[Dataset]] = {}
    seen: set[str] = set()
    for path in files:
        try:
            ds = _read_header(path, defer=True)
        except DataError as exc:
            # File names can hold patient names: they go to DEBUG only, the counts to INFO.
            skipped["not DICOM or unreadable"] += 1
            logger.debug("skipping %s", exc)
            continue
        if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP:
            skipped["DICOMDIR"] += 1
            continue
        if not any(tag in ds for tag in _PIXEL_TAGS):
            skipped["no pixel data"] += 1
            logger.debug("skipping %s: no pixel data", path)
            continue
        sop_uid = str(ds.get("SOPInstanceUID", "") or "")
        if sop_uid and sop_uid in seen:
            skipped["duplicate SOPInstanceUID"] += 1
            logger.debug("skipping %s: duplicate SOPInstanceUID", path)
            continue
        seen.add(sop_uid)
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append(ds)
    if skipped:
        logger.info(
            "DICOM folder scan skipped %d of %d files (%s)",
            sum(skipped.values()),
            len(files),
            ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())),
        )
    if not groups:
        detail = f" ({', '.join(f'{n} {why}' for why, n in sorted(skipped.items()))})" if skipped else ""
        raise DataError(
            f"{folder}: no DICOM images found in {len(files)} file{'' if len(files) == 1 else 's'}{detail}; "
            "a folder is read as a DICOM series"
        )
    infos = {uid: _series_info(uid, datasets) for uid, datasets in groups.items()}
    order = sorted(groups, key=lambda uid: _series_sort_key(infos[uid]))
    return {uid: groups[uid] for uid in order}


def _series_sort_key(info: SeriesInfo) -> tuple[float, str, str]:
    return (math.inf if info.number is None else info.number, info.description, info.series_key)


def series_key(uid: str) -> str:
    """Short stable key of a SeriesInstanceUID (first 12 hex digits of its SHA-256)."""
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:12]


def _series_info(uid: str, datasets: Sequence[Dataset]) -> SeriesInfo:
    ds = datasets[0]
    n_slices = sum(_n_frames(d) for d in datasets)
    return SeriesInfo(
        series_key=series_key(uid),
        number=_int_or_none(ds.get("SeriesNumber")),
        description=" ".join(str(ds.get("SeriesDescription", "") or "").split()),
        modality=str(ds.get("Modality", "") or "").strip(),
        n_files=len(datasets),
        shape=(int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), n_slices),
    )


def _select(folder: Path, groups: dict[str, list[Dataset]], series: str | None) -> list[Dataset]:
    infos = {uid: _series_info(uid, datasets) for uid, datasets in groups.items()}
    listing = "; ".join(info.label() for info in infos.values())
    if series is None:
        if len(groups) == 1:
            return next(iter(groups.values()))
        raise DataError(
            f"{folder}: holds {len(groups)} DICOM series, choose one with series=<key, number or description>: "
            f"{listing}"
        )
    wanted = str(series).strip()
    for match in (
        lambda uid, info: uid == wanted,
        lambda uid, info: info.series_key == wanted.lower(),
        lambda uid, info: info.number is not None and str(info.number) == wanted,
        lambda uid, info: info.description.casefold() == wanted.casefold(),
    ):
        hits = [uid for uid, info in infos.items() if match(uid, info)]
        if len(hits) == 1:
            return groups[hits[0]]
        if len(hits) > 1:
            raise DataError(
                f"{folder}: {len(hits)} DICOM series match series={wanted!r}, use a series key instead: "
                + "; ".join(infos[uid].label() for uid in hits)
            )
    raise DataError(f"{folder}: no DICOM series matches series={wanted!r}; the folder holds: {listing}")


def _folder_patient_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for datasets in _scan(folder).values():
        for ds in datasets:
            value = str(ds.get("PatientID", "") or "").strip()
            if value:
                ids.add(value)
    return ids


# --- frames and geometry ---------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """One 2D frame: a single-frame file, or one frame of a multi-frame file."""

    ds: Dataset
    index: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None  # DICOM order: (between rows, between columns)
    thickness: float | None
    slope: float
    intercept: float


def _n_frames(ds: Dataset) -> int:
    return max(_int_or_none(ds.get("NumberOfFrames")) or 1, 1)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _floats(value: Any, n: int) -> np.ndarray | None:
    """Parse a DS/FD value of ``n`` numbers; ``None`` when absent or malformed."""
    if value is None or value == "":
        return None
    try:
        items = [value] if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) else value
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return np.asarray(values, dtype=float)


def _fg(per: Dataset | None, shared: Dataset | None, ds: Dataset, sequence: str, keyword: str) -> Any:
    """Look ``keyword`` up in a per-frame, then shared functional group, then the top-level dataset."""
    for group in (per, shared):
        if group is not None and sequence in group:
            items = group[sequence].value
            if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
                return items[0][keyword].value
    return ds.get(keyword)


def _frames_of(ds: Dataset) -> list[_Frame]:
    n = _n_frames(ds)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != n:
        raise DataError(
            f"{ds.filename}: DICOM file declares {n} frames but {len(per_frame)} per-frame functional groups"
        )
    frames = []
    for index in range(n):
        per = per_frame[index] if per_frame else None
        spacing = _floats(_fg(per, shared, ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
        thickness = _floats(_fg(per, shared, ds, "PixelMeasuresSequence", "SliceThickness"), 1)
        slope = _floats(_fg(per, shared, ds, "PixelValueTransformationSequence", "RescaleSlope"), 1)
        intercept = _floats(_fg(per, shared, ds, "PixelValueTransformationSequence", "RescaleIntercept"), 1)
        frames.append(
            _Frame(
                ds=ds,
                index=index,
                position=_floats(_fg(per, shared, ds, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_floats(
                    _fg(per, shared, ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                pixel_spacing=(
                    (float(spacing[0]), float(spacing[1]))
                    if spacing is not None and (spacing > 0).all()
                    else None
                ),
                thickness=float(thickness[0]) if thickness is not None and thickness[0] > 0 else None,
                slope=float(slope[0]) if slope is not None and slope[0] != 0 else 1.0,
                intercept=float(intercept[0]) if intercept is not None else 0.0,
            )
        )
    return frames


@dataclass
class _Geometry:
    order: list[int]
    affine: np.ndarray
    meta: dict[str, Any]


def _geometry(frames: list[_Frame], where: Path) -> _Geometry:
    """Order the frames along the slice normal and build the RAS affine."""
    meta: dict[str, Any] = {}
    spacing = _in_plane_spacing(frames, where, meta)  # (between columns = along X, between rows = along Y)
    n = len(frames)
    if all(f.position is not None and f.orientation is not None for f in frames):
        orientations = np.stack([f.orientation for f in frames])  # type: ignore[misc]
        if np.abs(orientations - orientations[0]).max() > 1e-3:
            raise DataError(
                f"{where}: the DICOM images have different orientations (a localizer mixed into the series?); "
                "mednas reads one volume per series"
            )
        row_norm, col_norm = (
            float(np.linalg.norm(orientations[0, :3])),
            float(np.linalg.norm(orientations[0, 3:])),
        )
        if row_norm < 1e-6 or col_norm < 1e-6:
            raise DataError(
                f"{where}: DICOM ImageOrientationPatient has a zero direction vector: no usable geometry"
            )
        row_dir = orientations[0, :3] / row_norm
        col_dir = orientations[0, 3:] / col_norm
        normal = np.cross(row_dir, col_dir)
        if float(np.linalg.norm(normal)) < 1e-3:
            raise DataError(
                f"{where}: DICOM ImageOrientationPatient has parallel row and column directions: no usable geometry"
            )
        positions = np.stack([f.position for f in frames])  # type: ignore[misc]
        along = positions @ normal
        order = [int(i) for i in np.argsort(along, kind="stable")]
        gaps = np.diff(along[order])
        if n > 1 and (gaps < _SAME_POSITION_MM).any():
            n_positions = int((gaps >= _SAME_POSITION_MM).sum()) + 1
            raise DataError(
                f"{where}: {n} DICOM images lie at only {n_positions} slice positions, so the series holds "
                "several volumes (echoes, time points or a repeated acquisition); mednas reads one volume per series"
            )
        if n > 1:
            step = (positions[order[-1]] - positions[order[0]]) / (n - 1)
            median = float(np.median(gaps))
            irregular = n > 2 and float(gaps.max() - gaps.min()) > max(0.01, 0.01 * median)
            meta["slice_spacing_irregular"] = bool(irregular)
            if irregular:
                logger.warning(
                    "DICOM slice spacing is irregular: gaps from %.3f to %.3f mm (missing slices?); the affine "
                    "uses the mean spacing %.3f mm",
                    float(gaps.min()),
                    float(gaps.max()),
                    float(np.linalg.norm(step)),
                )
        else:
            step = normal * _slice_thickness(frames[0])
        lps = np.eye(4)
        lps[:3, 0] = row_dir * spacing[0]
        lps[:3, 1] = col_dir * spacing[1]
        lps[:3, 2] = step
        lps[:3, 3] = positions[order[0]]
        meta["geometry"] = "patient"
        return _Geometry(order, _LPS_TO_RAS @ lps + 0.0, meta)  # + 0.0 turns -0.0 into 0.0

    # No patient geometry (radiographs, secondary captures, anonymised multi-frames): keep the file's own order.
    if n > 1 and len({id(f.ds) for f in frames}) > 1:
        logger.warning(
            "DICOM images have no ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber"
        )
        instance = [
            (_int_or_none(f.ds.get("InstanceNumber")) or 0, str(f.ds.filename), f.index) for f in frames
        ]
        order = sorted(range(n), key=lambda i: instance[i])
    else:
        order = list(range(n))
    affine = np.diag([spacing[0], spacing[1], _slice_thickness(frames[0]), 1.0])
    meta["geometry"] = "none"
    return _Geometry(order, affine, meta)


def _slice_thickness(frame: _Frame) -> float:
    """Distance to the next slice when positions cannot tell: SpacingBetweenSlices, SliceThickness, or 1 mm."""
    dz = _floats(frame.ds.get("SpacingBetweenSlices"), 1)
    if dz is not None and dz[0] > 0:
        return float(dz[0])
    return frame.thickness or 1.0


def _in_plane_spacing(frames: list[_Frame], where: Path, meta: dict[str, Any]) -> tuple[float, float]:
    spacings = {f.pixel_spacing for f in frames}
    if len(spacings) > 1 and None not in spacings:
        values = np.array(list(spacings))
        if np.abs(values - values[0]).max() > 1e-4:
            raise DataError(f"{where}: the DICOM images have different PixelSpacing values")
    first = frames[0].pixel_spacing
    if first is not None:
        meta["spacing_source"] = "PixelSpacing"
        return first[1], first[0]
    imager = _floats(frames[0].ds.get("ImagerPixelSpacing"), 2)
    if imager is not None and (imager > 0).all():
        meta["spacing_source"] = "ImagerPixelSpacing"
        return float(imager[1]), float(imager[0])
    meta["spacing_source"] = "unknown"
    logger.info("DICOM image has no usable pixel spacing: assuming 1 mm")
    return 1.0, 1.0


# --- pixels ----------------------------------------------------------------------------------------------------


def _decode(ds: Dataset) -> np.ndarray:
    """Decode all frames of ``ds`` as ``(F, rows, columns, samples)`` stored values (RGB for colour)."""
    path = ds.filename
    file_meta = getattr(ds, "file_meta", None)
    uid = getattr(file_meta, "TransferSyntaxUID", None)
    if uid is not None and uid.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(uid)
        except NotImplementedError as exc:
            raise DataError(f"{path}: DICOM transfer syntax {uid.name} is not supported") from exc
        if not decoder.is_available:
            raise DataError(
                f"{path}: DICOM pixel data is compressed ({uid.name}) and no decoder is installed: {_PIP_HINT}"
            )
    _check_pixel_size(ds, compressed=uid is not None and uid.is_compressed)
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(ds)  # unlike ds.pixel_array, keeps no second copy inside ds
    except Exception as exc:  # pydicom raises ValueError, RuntimeError, AttributeError, ... on bad data
        raise DataError(
            f"{path}: cannot decode DICOM pixel data (truncated or corrupt?): {one_line(exc)}"
        ) from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        samples = 3
    if _n_frames(ds) == 1:
        arr = arr[None]
    if samples == 1:
        arr = arr[..., None]
    for tag in _PIXEL_TAGS:  # the encoded bytes are no longer needed: free them before the next file
        if tag in ds:
            del ds[tag]
    return arr


def _check_pixel_size(ds: Dataset, *, compressed: bool) -> None:
    """Refuse Rows x Columns x frames x samples x bits that the pixel data cannot hold, before decoding."""
    from mednas.io._limits import check_declared_size

    rows = _int_or_none(ds.get("Rows")) or 0
    cols = _int_or_none(ds.get("Columns")) or 0
    samples = max(_int_or_none(ds.get("SamplesPerPixel")) or 1, 1)
    bits = max(_int_or_none(ds.get("BitsAllocated")) or 8, 1)
    available = None
    for tag in _PIXEL_TAGS:
        if tag in ds:
            value = ds[tag].value
            available = len(value) if isinstance(value, (bytes, bytearray)) else None
            break
    shape = (cols, rows, _n_frames(ds), samples)
    if compressed or bits < 8:
        check_declared_size(
            ds.filename, shape, max(bits // 8, 1), what="DICOM Rows x Columns x frames of pixel data"
        )
    else:
        check_declared_size(
            ds.filename,
            shape,
            bits // 8,
            available=available,
            ratio=1,
            what="DICOM Rows x Columns x frames of pixel data",
        )


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _read_datasets(datasets: list[Dataset], *, where: Path, force_3d: bool) -> MedImage:
    frames = [frame for ds in datasets for frame in _frames_of(ds)]
    ds0 = datasets[0]
    if (
        len(datasets) > 1
    ):  # the whole series, before any file is decoded (each file is checked again in _decode)
        from mednas.io._limits import check_declared_size

        rows, cols = _int_or_none(ds0.get("Rows")) or 0, _int_or_none(ds0.get("Columns")) or 0
        samples = max(_int_or_none(ds0.get("SamplesPerPixel")) or 1, 1)
        check_declared_size(where, (cols, rows, len(frames), samples), 4, what="DICOM series (as float32)")
    geometry = _geometry(frames, where)
    ordered = [frames[i] for i in geometry.order]

    decoded: dict[int, np.ndarray] = {}
    raws: list[np.ndarray] = []
    for frame in ordered:
        if id(frame.ds) not in decoded:
            decoded[id(frame.ds)] = _decode(frame.ds)
        stack = decoded[id(frame.ds)]
        if frame.index >= stack.shape[0]:
            raise DataError(f"{frame.ds.filename}: DICOM pixel data holds fewer frames than NumberOfFrames")
        raws.append(stack[frame.index])
    shapes = {raw.shape for raw in raws}
    if len(shapes) > 1:
        raise DataError(f"{where}: the DICOM images differ in size: {sorted(shapes)}")
    rows, cols, samples = raws[0].shape
    source_dtype = raws[0].dtype
    modality = str(ds0.get("Modality", "") or "").strip() or None
    photometric = str(ds0.get("PhotometricInterpretation", "") or "").strip().upper() or None
    meta: dict[str, Any] = {}

    planes: Iterable[np.ndarray] = raws
    if samples == 1:
        planes, value_meta = _map_values(ordered, raws, modality, photometric, single=len(ordered) == 1)
        meta.update(value_meta)
        meta["photometric"] = "MONOCHROME2"
    else:
        meta["photometric"] = "RGB"
    if photometric and photometric != meta["photometric"]:
        meta["photometric_source"] = photometric

    # Planes come one at a time, so at most the decoded frames and the output are in memory together.
    planes = iter(planes)
    first = next(planes)
    out = np.empty((samples, cols, rows, len(raws)), dtype=first.dtype)
    out[..., 0] = first.transpose(2, 1, 0)
    for k, plane in enumerate(planes, start=1):
        out[..., k] = plane.transpose(2, 1, 0)
    decoded.clear()
    if len(raws) == 1 and not force_3d:
        out = out[..., 0]

    meta.update(geometry.meta)
    meta.update(
        {
            "format": "dicom",
            "source": "pydicom",
            "modality": modality,
            "series_description": " ".join(str(ds0.get("SeriesDescription", "") or "").split()) or None,
            "series_number": _int_or_none(ds0.get("SeriesNumber")),
            "series_key": series_key(str(ds0.get("SeriesInstanceUID", "") or "")),
            "sop_class": _sop_name(ds0),
            "body_part": str(ds0.get("BodyPartExamined", "") or "").strip() or None,
            "transfer_syntax": _transfer_syntax(ds0),
            "dtype": str(source_dtype),
            "n_files": len(datasets),
            "n_frames": len(raws),
        }
    )
    return MedImage(array=out, affine=geometry.affine, meta=scrub(meta))


def _map_values(
    frames: list[_Frame],
    raws: list[np.ndarray],
    modality: str | None,
    photometric: str | None,
    *,
    single: bool,
) -> tuple[Iterable[np.ndarray], dict[str, Any]]:
    """Apply rescale (and, for a radiograph, its VOI LUT or window), then turn MONOCHROME1 into MONOCHROME2."""
    ds0 = frames[0].ds
    meta: dict[str, Any] = {}
    slopes = np.array([f.slope for f in frames])
    intercepts = np.array([f.intercept for f in frames])
    if np.unique(slopes).size == 1 and np.unique(intercepts).size == 1:
        meta["rescale"] = {"slope": float(slopes[0]), "intercept": float(intercepts[0])}
    else:
        meta["rescale"] = "per-slice"
    mono1 = photometric == "MONOCHROME1"

    if single and modality in _RADIOGRAPHY and _has_voi(ds0):
        return [_radiograph_voi(frames[0], raws[0], mono1, meta)], meta

    if "ModalityLUTSequence" in ds0:
        from pydicom.pixels import apply_modality_lut

        planes = [np.asarray(apply_modality_lut(raw, ds0)) for raw in raws]
        if mono1:
            hi = 2 ** int(ds0.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
            planes = [hi - plane for plane in planes]
        meta["rescale"] = "modality LUT"
        return planes, meta

    # Every output value is gain * stored + offset per frame; MONOCHROME1 is inverted within the rescaled
    # stored range, so black stays black whatever the slope.
    gains, offsets = slopes.copy(), intercepts.copy()
    if mono1:
        lo, hi = _stored_range(ds0)
        gains = -slopes
        offsets = slopes * (lo + hi) + intercepts
    if (gains == 1).all() and (offsets == 0).all():
        return raws, meta
    integral = (
        np.issubdtype(raws[0].dtype, np.integer)
        and all(float(g).is_integer() for g in gains)
        and all(float(o).is_integer() for o in offsets)
    )
    if integral:
        bounds = [(int(raw.min()), int(raw.max())) for raw in raws]
        ends = [g * b + o for (lo_, hi_), g, o in zip(bounds, gains, offsets) for b in (lo_, hi_)]
        dtype = _int_dtype(min(ends), max(ends), raws[0].dtype)
        return (
            (raw.astype(np.int64) * int(g) + int(o)).astype(dtype, copy=False)
            for raw, g, o in zip(raws, gains, offsets)
        ), meta
    return (
        (raw.astype(np.float64) * g + o).astype(np.float32, copy=False)
        for raw, g, o in zip(raws, gains, offsets)
    ), meta


def _int_dtype(lo: float, hi: float, source: np.dtype) -> np.dtype:
    for candidate in (source, np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64)):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)


def _has_voi(ds: Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or (
        ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    )


def _radiograph_voi(frame: _Frame, raw: np.ndarray, mono1: bool, meta: dict[str, Any]) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut

    ds = frame.ds
    plane = raw[..., 0]
    lut = ds.get("VOILUTSequence")
    use_lut = bool(lut) and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None
    rescaled = plane.astype(np.float64) * frame.slope + frame.intercept
    try:
        windowed = np.asarray(
            apply_voi_lut(rescaled.round().astype(np.int64) if use_lut else rescaled, ds, index=0),
            dtype=np.float64,
        )
    except Exception as exc:
        raise DataError(f"{ds.filename}: cannot apply the DICOM VOI LUT/window: {one_line(exc)}") from exc
    if use_lut:
        lo, hi = 0.0, float(2 ** int(lut[0].LUTDescriptor[2]) - 1)
        meta["voi"] = "lut"
    else:
        stored_lo, stored_hi = _stored_range(ds)
        ends = sorted((stored_lo * frame.slope + frame.intercept, stored_hi * frame.slope + frame.intercept))
        lo, hi = ends
        meta["voi"] = "window"
        center, width = ds.WindowCenter, ds.WindowWidth
        meta["window"] = [float(_first(center)), float(_first(width))]
    if mono1:
        windowed = (lo + hi) - windowed
    return windowed.astype(np.float32)[..., None]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple, Sequence)) and not isinstance(value, str) else value


def _sop_name(ds: Dataset) -> str | None:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not uid:
        return None
    return str(getattr(uid, "name", uid))


def _transfer_syntax(ds: Dataset) -> str | None:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return str(getattr(uid, "name", uid)) if uid else None
