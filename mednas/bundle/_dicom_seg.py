"""DICOM outputs of ``mednas predict --format dicom-seg``: a Segmentation object, or a JSON result for classification.

A predicted mask goes back into the archive it came from as a DICOM SEG (written with ``highdicom``) that references
the source images frame by frame; patient and study attributes are copied from the source headers only, and
mednas adds nothing identifying of its own (no paths, no host names).
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednas.errors import DataError, MednasError
from mednas.io import MedImage

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["Algorithm", "check_dicom_inputs", "write_dicom_result", "write_dicom_seg"]

# Patient and study attributes a SEG must carry (type 2): highdicom reads them from the first source image, so an
# anonymised source that lacks one gets it empty (in memory only) rather than a traceback.
_PIP_HINT = 'pip install "mednas[dicom]"'
_TYPE2_FROM_SOURCE = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
# highdicom would copy these into a "contributing equipment" item (where and by whom the source was acquired);
# the SEG does not need them to be filed with its study, so they are dropped from the in-memory headers first.
_NOT_COPIED = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "OperatorsName",
    "PerformingPhysicianName",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
)


@dataclass(frozen=True)
class Algorithm:
    """The model as a DICOM object names it.

    Attributes:
        name: Bundle name (the task's name).
        version: Bundle version.
        class_names: Class names in label order; label 0 is the background.
        findings: Indices of the finding classes (their segments are coded as lesions).
        source: ``"retrained"`` or ``"proxy candidate, not retrained"``.
    """

    name: str
    version: str
    class_names: tuple[str, ...]
    findings: tuple[int, ...]
    source: str


def check_dicom_inputs(inputs: list[Any], *, seg: bool) -> None:
    """Refuse, before anything is written, an input that is not a DICOM series folder or DICOM file.

    Args:
        inputs: The inputs as given to ``predict``.
        seg: A SEG will be written: highdicom must be installed.

    Raises:
        DataError: One line naming the first input that is not DICOM.
        MednasError: ``seg`` and highdicom is not installed.
    """
    from mednas.io._readers import sniff_format

    if seg and importlib.util.find_spec("highdicom") is None:
        raise MednasError(
            f"--format dicom-seg writes DICOM SEG with highdicom, which is not installed: {_PIP_HINT}"
        )
    for item in inputs:
        if isinstance(item, MedImage):
            raise DataError("--format dicom-seg needs DICOM inputs; an in-memory image has no source series")
        path = Path(item)
        if path.is_dir():
            continue
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue  # reading the case reports it, as for any format
        # As the reader: the DICM marker, a .dcm name, or an old file that starts with a group 0002/0008 tag.
        dicom = sniff_format(head) == "dicom" or head[:2] in (b"\x02\x00", b"\x08\x00")
        if not dicom and path.suffix.lower() not in (".dcm", ".dicom"):
            raise DataError(
                f"{path}: --format dicom-seg needs a DICOM series folder or DICOM file; this input is not DICOM "
                "(leave out --format dicom-seg for NIfTI masks)"
            )


def write_dicom_seg(mask: MedImage, source: str | os.PathLike[str], dest: Path, algorithm: Algorithm) -> Path:
    """Write ``mask`` as a BINARY DICOM Segmentation of the series (or file) it was predicted from.

    Args:
        mask: The label map on the source's grid, ``(1, X, Y[, Z])`` as :func:`mednas.io.read_image` read the
            source (X along columns, Y along rows, Z in the reader's slice order).
        source: The DICOM series folder or file the mask was predicted from.
        dest: File to write (atomically).
        algorithm: Names the model: one segment per non-background class, labelled with the class name.

    Returns:
        ``dest``.

    Raises:
        DataError: One line naming ``source`` when its headers do not match the mask or highdicom cannot
            describe them.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from mednas.io import read_dicom_headers, write_bytes

    datasets, frames = read_dicom_headers(source)
    images, pixels = _source_frames(mask, datasets, frames, source)
    ds0 = images[0]
    for ds in images:
        _prepare_header(ds)
    try:
        seg = hd.seg.Segmentation(
            source_images=images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_segments(algorithm),
            series_instance_uid=generate_uid(),
            series_number=_series_number(ds0),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="mednas",
            manufacturer_model_name="mednas predict",
            software_versions=_mednas_version(),
            device_serial_number="none",
            series_description=f"mednas {algorithm.name}"[:64],
            content_label="MEDNAS",
            content_description=f"{algorithm.name} {algorithm.version} ({algorithm.source})"[:64],
            omit_empty_frames=False,
        )
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise DataError(
            f"{source}: cannot write a DICOM SEG for this input ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]})"
        ) from None
    return write_bytes(dest, buf.getvalue())


def write_dicom_result(
    prediction: Any, source: str | os.PathLike[str], dest: Path, algorithm: Algorithm
) -> Path:
    """Write a classification of a DICOM input as JSON that names the images it refers to.

    The file holds the model (name, version, source), the predicted class, probabilities, finding score,
    threshold and decision, and the referenced StudyInstanceUID, SeriesInstanceUID and SOPInstanceUIDs (in
    slice order); nothing else from the source headers, and no path.

    Returns:
        ``dest``.
    """
    from mednas.io import read_dicom_headers, write_json

    datasets, frames = read_dicom_headers(source)
    ds0 = datasets[0]
    sop_uids = list(dict.fromkeys(str(datasets[i].get("SOPInstanceUID", "")) for i, _ in frames))
    record = {
        "format": "mednas-classification",
        "format_version": 1,
        "model": {"name": algorithm.name, "version": algorithm.version, "source": algorithm.source},
        "label": prediction.label,
        "probabilities": prediction.probabilities,
        "finding_score": prediction.finding_score,
        "threshold": prediction.threshold,
        "decision": prediction.decision,
        "findings": [algorithm.class_names[i] for i in algorithm.findings],
        "referenced": {
            "study_instance_uid": str(ds0.get("StudyInstanceUID", "")),
            "series_instance_uid": str(ds0.get("SeriesInstanceUID", "")),
            "sop_instance_uids": sop_uids,
        },
    }
    return write_json(dest, record)


def _source_frames(
    mask: MedImage, datasets: list[Dataset], frames: list[tuple[int, int]], source: Any
) -> tuple[list[Dataset], np.ndarray]:
    """The source images highdicom references and the mask as ``(frames, rows, columns)`` in their frame order."""
    labels = np.asarray(mask.array)[0]
    if labels.ndim == 2:
        labels = labels[..., None]
    slices = labels.transpose(2, 1, 0)  # (Z, X, Y) -> (Z, rows, columns)
    rows, cols = int(datasets[0].get("Rows", 0) or 0), int(datasets[0].get("Columns", 0) or 0)
    if slices.shape != (len(frames), rows, cols):
        raise DataError(
            f"{source}: the DICOM headers describe {len(frames)} slices of {rows} x {cols} but the mask is "
            f"{'x'.join(map(str, labels.shape))}; cannot write a DICOM SEG"
        )
    pixels = np.ascontiguousarray(slices, dtype=np.uint8)
    if len(datasets) == 1:
        # One file (single- or multi-frame): highdicom pairs pixel_array[i] with the file's frame i.
        in_file = np.empty_like(pixels)
        in_file[[f for _, f in frames]] = pixels
        return datasets, in_file
    if any(f != 0 for _, f in frames):
        raise DataError(
            f"{source}: the series mixes several multi-frame files; a DICOM SEG references one multi-frame "
            "image or single-frame images"
        )
    return [datasets[i] for i, _ in frames], pixels


def _prepare_header(ds: Dataset) -> None:
    """Fill missing type 2 patient/study attributes with empty values; drop equipment-site values (in memory)."""
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in ds:
            setattr(ds, keyword, "")
    for keyword in _NOT_COPIED:
        if keyword in ds:
            delattr(ds, keyword)


def _segments(algorithm: Algorithm) -> list[Any]:
    """One segment per non-background class, coded as a lesion (finding classes) or a tissue."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    family = codes.cid7162.ArtificialIntelligence
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], family=family, version=algorithm.version[:64]
    )
    out = []
    for number, label in enumerate(algorithm.class_names[1:], start=1):
        finding = number in algorithm.findings
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label[:64],
                segmented_property_category=(
                    codes.SCT.MorphologicallyAbnormalStructure if finding else codes.SCT.Tissue
                ),
                segmented_property_type=codes.SCT.Lesion if finding else codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=ident,
            )
        )
    return out


def _series_number(ds: Dataset) -> int:
    """The source's SeriesNumber + 1000 (a derived series sorts after its source), or 1000."""
    try:
        return 1000 + int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        return 1000


def _mednas_version() -> str:
    from mednas._versions import package_version

    return package_version("mednas") or "unknown"
