"""Write DICOM from a :class:`~mednas.io.MedImage`, for tests that need a series with known geometry.

Real series arrive with shuffled file names, scrambled InstanceNumbers and identifying values; these writers
reproduce that from any volume, so a test can check that reading gives back the same voxels at the same world
positions and that nothing identifying leaks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mednas.io._image import MedImage

__all__ = ["FAKE_IDENTIFYING", "write_dicom_multiframe", "write_dicom_series"]

# Fake identifying values written into every file, so tests can search outputs for them.
FAKE_IDENTIFYING: dict[str, str] = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-12345",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-98765",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "OPERATOR^OLGA",
    "StudyDate": "20240229",
}

_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
_ENHANCED_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2.1", "MR": "1.2.840.10008.5.1.4.1.1.4.1"}
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_dicom_series(
    image: MedImage,
    folder: str | os.PathLike[str],
    *,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    series_description: str = "mednas synthetic series",
    series_number: int = 1,
    series_uid: str | None = None,
    identifying: Mapping[str, str] | None = None,
    shuffle_names: bool = False,
    scramble_instance_numbers: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write a 3D one-channel image as a DICOM series, one file per slice (uncompressed, 16-bit).

    Args:
        image: ``(1, X, Y, Z)`` image; ``affine`` (RAS) must have orthogonal in-plane columns. Its values must be
            ``rescale_slope * n + rescale_intercept`` for 16-bit integers ``n``.
        folder: Created if missing.
        modality: DICOM Modality; CT and MR get their SOP classes, others CT's.
        rescale_slope: RescaleSlope written to every slice.
        rescale_intercept: RescaleIntercept written to every slice.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        series_uid: SeriesInstanceUID; a new one by default.
        identifying: Patient and visit attributes to write (keyword -> value); :data:`FAKE_IDENTIFYING` by
            default.
        shuffle_names: Name files in a random order unrelated to slice position.
        scramble_instance_numbers: Give InstanceNumbers in a random order.
        seed: Seed of the shuffles and of generated UIDs.

    Returns:
        The files written, in slice order ``k = 0 .. Z-1``.

    Example:
        >>> files = write_dicom_series(image, tmp_path / "ct", shuffle_names=True)  # doctest: +SKIP
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stored, pixel_representation = _stored(image, rescale_slope, rescale_intercept)
    row_dir, col_dir, spacing, positions, thickness = _lps_geometry(image)
    n = stored.shape[2]
    names = rng.permutation(n) if shuffle_names else np.arange(n)
    instance = rng.permutation(n) + 1 if scramble_instance_numbers else np.arange(n) + 1
    common = _common(modality, series_description, series_number, series_uid, identifying, seed)
    common["SOPClassUID"] = _SOP_CLASS.get(modality, _SOP_CLASS["CT"])
    paths = []
    for k in range(n):
        ds = _dataset(common, generate_uid(entropy_srcs=[str(seed), common["SeriesInstanceUID"], str(k)]))
        ds.InstanceNumber = int(instance[k])
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(thickness)
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleIntercept = _ds(rescale_intercept)
        _pixel_module(ds, stored[:, :, k].T, pixel_representation)
        path = folder / f"{'x' if shuffle_names else 'IM'}{int(names[k]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_multiframe(
    image: MedImage,
    path: str | os.PathLike[str],
    *,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    series_description: str = "mednas synthetic enhanced",
    series_number: int = 1,
    identifying: Mapping[str, str] | None = None,
    shuffle_frames: bool = False,
    seed: int = 0,
) -> Path:
    """Write a 3D one-channel image as one enhanced (multi-frame) DICOM file with per-frame functional groups.

    Geometry goes where enhanced objects keep it: PlanePositionSequence per frame, PlaneOrientationSequence,
    PixelMeasuresSequence and PixelValueTransformationSequence shared. Arguments as in
    :func:`write_dicom_series`; ``shuffle_frames`` stores the frames in a random order.

    Returns:
        The file written.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stored, pixel_representation = _stored(image, rescale_slope, rescale_intercept)
    row_dir, col_dir, spacing, positions, thickness = _lps_geometry(image)
    n = stored.shape[2]
    order = rng.permutation(n) if shuffle_frames else np.arange(n)
    common = _common(modality, series_description, series_number, None, identifying, seed)
    common["SOPClassUID"] = _ENHANCED_SOP_CLASS.get(modality, _ENHANCED_SOP_CLASS["CT"])
    ds = _dataset(common, None)
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n

    def item(**values: Any) -> Dataset:
        out = Dataset()
        for key, value in values.items():
            setattr(out, key, value)
        return out

    shared = item(
        PlaneOrientationSequence=Sequence(
            [item(ImageOrientationPatient=[_ds(v) for v in (*row_dir, *col_dir)])]
        ),
        PixelMeasuresSequence=Sequence(
            [item(PixelSpacing=[_ds(spacing[1]), _ds(spacing[0])], SliceThickness=_ds(thickness))]
        ),
        PixelValueTransformationSequence=Sequence(
            [item(RescaleSlope=_ds(rescale_slope), RescaleIntercept=_ds(rescale_intercept), RescaleType="US")]
        ),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            item(
                PlanePositionSequence=Sequence([item(ImagePositionPatient=[_ds(v) for v in positions[k]])]),
                FrameContentSequence=Sequence([item(InStackPositionNumber=int(k) + 1)]),
            )
            for k in order
        ]
    )
    frames = np.stack([stored[:, :, k].T for k in order])  # (frames, rows, columns)
    _pixel_module(ds, frames, pixel_representation)
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored(image: MedImage, slope: float, intercept: float) -> tuple[np.ndarray, int]:
    array = np.asarray(image.array)
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"expected a (1, X, Y, Z) image, got {array.shape}")
    values = (array[0].astype(np.float64) - intercept) / slope
    stored = np.round(values)
    if np.abs(values - stored).max(initial=0.0) > 1e-6:
        raise ValueError("image values are not rescale_slope * integer + rescale_intercept")
    if stored.min(initial=0) >= 0:
        if stored.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError("stored values exceed 16 bits")
        return stored.astype(np.uint16), 0
    if stored.min() < np.iinfo(np.int16).min or stored.max() > np.iinfo(np.int16).max:
        raise ValueError("stored values exceed 16 bits")
    return stored.astype(np.int16), 1


def _lps_geometry(image: MedImage) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray, float]:
    """Row/column direction cosines, in-plane spacing (X, Y), slice positions and thickness in LPS."""
    lps = _LPS_FROM_RAS @ np.asarray(image.affine, dtype=float)
    x_axis, y_axis, z_axis = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    sx, sy = float(np.linalg.norm(x_axis)), float(np.linalg.norm(y_axis))
    row_dir, col_dir = x_axis / sx, y_axis / sy
    if abs(float(row_dir @ col_dir)) > 1e-6:
        raise ValueError("the in-plane axes of the affine are not orthogonal")
    n = image.array.shape[-1]
    positions = lps[:3, 3][None, :] + np.arange(n)[:, None] * z_axis[None, :]
    return row_dir, col_dir, (sx, sy), positions, float(np.linalg.norm(z_axis))


def _common(
    modality: str,
    description: str,
    number: int,
    series_uid: str | None,
    identifying: Mapping[str, str] | None,
    seed: int,
) -> dict[str, Any]:
    from pydicom.uid import generate_uid

    values: dict[str, Any] = dict(FAKE_IDENTIFYING if identifying is None else identifying)
    values.update(
        Modality=modality,
        SeriesDescription=description,
        SeriesNumber=number,
        StudyInstanceUID=generate_uid(entropy_srcs=[str(seed), "study"]),
        SeriesInstanceUID=series_uid
        or generate_uid(entropy_srcs=[str(seed), description, str(number), "series"]),
        FrameOfReferenceUID=generate_uid(entropy_srcs=[str(seed), "frame of reference"]),
    )
    return values


def _dataset(common: Mapping[str, Any], sop_uid: str | None) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    instance_uid = (
        UID(sop_uid) if sop_uid else generate_uid(entropy_srcs=[common["SeriesInstanceUID"], "instance"])
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = common["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in common.items():
        setattr(ds, key, value)
    ds.SOPInstanceUID = instance_uid
    return ds


def _pixel_module(ds: Any, pixels: np.ndarray, pixel_representation: int) -> None:
    """Attach 16-bit pixels shaped ``(rows, columns)`` or ``(frames, rows, columns)``."""
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    ds.PixelData = (
        np.ascontiguousarray(pixels).astype("<u2" if pixel_representation == 0 else "<i2").tobytes()
    )


def _ds(value: float) -> str:
    """Format a number as a DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))
