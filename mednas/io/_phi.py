"""Identifying values: which DICOM attributes identify a patient, and how metadata is kept free of them.

mednas splits data by patient but never stores who the patient is: readers hand out the raw PatientID only
through :func:`patient_key`, whose caller hashes it (with the task's salt) before it goes anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["IDENTIFYING_TAGS", "is_identifying", "patient_key", "scrub"]

# DICOM keywords of attributes that identify (or help re-identify) a patient, a visit or the staff, after the
# DICOM PS3.15 Annex E basic confidentiality profile. Metadata keys are matched against them ignoring case and
# underscores, so ``patient_name``, ``PatientName`` and ``patientname`` are all caught.
IDENTIFYING_TAGS: tuple[str, ...] = (
    # The patient.
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientComments",
    "PatientInsurancePlanCodeSequence",
    "MedicalRecordLocator",
    "MilitaryRank",
    "BranchOfService",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "CountryOfResidence",
    "RegionOfResidence",
    "ResponsiblePerson",
    # The visit and the order.
    "AccessionNumber",
    "StudyID",
    "AdmissionID",
    "RequestAttributesSequence",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    # The people and places.
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    # UIDs that link back to the source archive (mednas exposes only a hash of SeriesInstanceUID).
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "IrradiationEventUID",
    # Free text that often holds any of the above.
    "ImageComments",
    "StudyComments",
    "RequestedProcedureDescription",
)

_NORMALISED = frozenset(tag.lower() for tag in IDENTIFYING_TAGS)


def _normalise(key: str) -> str:
    return key.replace("_", "").replace("-", "").replace(" ", "").lower()


def is_identifying(key: str) -> bool:
    """Tell whether a metadata key names an identifying attribute (case and underscores ignored).

    Example:
        >>> is_identifying("patient_name"), is_identifying("modality")
        (True, False)
    """
    return _normalise(key) in _NORMALISED


def scrub(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``meta`` without identifying keys, recursing into nested mappings and lists.

    Args:
        meta: Metadata as a reader builds it.

    Returns:
        A new dict; ``meta`` is not modified.

    Example:
        >>> scrub({"modality": "CT", "PatientID": "123", "extra": {"patient_name": "DOE^JANE"}})
        {'modality': 'CT', 'extra': {}}
    """
    return {key: _scrub_value(value) for key, value in meta.items() if not is_identifying(str(key))}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    return value


def patient_key(source: Any) -> str | None:
    """Return the raw PatientID of a DICOM dataset, file or folder, for the caller to hash.

    The returned value identifies a patient: the caller must hash it (salted, e.g. ``sha256(salt + id)``)
    at once and never store, log or display it raw. mednas uses it only to keep one patient's images in one
    split.

    Args:
        source: A ``pydicom.Dataset``, the path of a DICOM file, or a folder of DICOM files (every image in
            it must belong to one patient).

    Returns:
        The PatientID with surrounding spaces removed, or ``None`` when it is absent or empty.

    Raises:
        DataError: If a path cannot be read as DICOM, or a folder holds images of several patients.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            from mednas.io._dicom import _folder_patient_ids

            ids = _folder_patient_ids(path)
            if len(ids) > 1:
                from mednas.errors import DataError

                raise DataError(f"{path}: holds DICOM images of {len(ids)} different patients (PatientID)")
            return next(iter(ids), None)
        from mednas.io._dicom import _read_header

        source = _read_header(path)
    value = source.get("PatientID", None)
    if value is None:
        return None
    text = str(value).strip()
    return text or None
