"""No identifying value reaches image metadata; the patient key is handed out only raw, for hashing."""

from __future__ import annotations

import json

import pytest

from mednas.errors import DataError
from mednas.io import IDENTIFYING_TAGS, MedImage, dumps_json, list_series, patient_key, read_image, scrub
from mednas.testing._dicom import FAKE_IDENTIFYING, write_dicom_multiframe, write_dicom_series
from tests.io._helpers import pydicom_file


def _assert_no_identifying(text: str) -> None:
    for keyword, value in FAKE_IDENTIFYING.items():
        assert value not in text, f"{keyword} value leaked"
        assert keyword.lower() not in text.lower(), f"{keyword} key leaked"
    for fragment in ("DOE", "JANE", "PID-", "12345", "HOUSE", "Hospital"):
        assert fragment not in text


def test_series_meta_holds_no_identifying_values(lung_crop: MedImage, tmp_path) -> None:
    write_dicom_series(lung_crop, tmp_path / "series", rescale_intercept=-1024)
    write_dicom_multiframe(lung_crop, tmp_path / "enhanced.dcm", rescale_intercept=-1024)

    for image in (read_image(tmp_path / "series"), read_image(tmp_path / "enhanced.dcm")):
        _assert_no_identifying(dumps_json(image.meta))
    _assert_no_identifying(json.dumps([info.to_dict() for info in list_series(tmp_path / "series")]))


@pytest.mark.parametrize("name", ["CT_small.dcm", "RG1_UNCR.dcm", "emri_small.dcm"])
def test_pydicom_file_meta_holds_no_identifying_values(name: str) -> None:
    import pydicom

    path = pydicom_file(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    identifying = [str(ds.get(tag, "") or "") for tag in ("PatientName", "PatientID", "InstitutionName")]

    text = dumps_json(read_image(path).meta)

    for value in identifying:
        if len(value) > 2:
            assert value not in text


def test_patient_key_returns_the_raw_id_for_hashing(lung_crop: MedImage, tmp_path) -> None:
    files = write_dicom_series(lung_crop, tmp_path / "series", rescale_intercept=-1024)

    assert patient_key(files[0]) == "PID-12345"
    assert patient_key(tmp_path / "series") == "PID-12345"
    assert patient_key(pydicom_file("emri_small.dcm")) is None  # anonymised: empty PatientID


def test_patient_key_refuses_a_folder_of_two_patients(lung_crop: MedImage, tmp_path) -> None:
    write_dicom_series(lung_crop, tmp_path / "a", rescale_intercept=-1024)
    other = dict(FAKE_IDENTIFYING, PatientID="PID-67890")
    write_dicom_series(lung_crop, tmp_path / "b", rescale_intercept=-1024, identifying=other, seed=2)

    with pytest.raises(DataError) as excinfo:
        patient_key(tmp_path)

    assert "2 different patients" in str(excinfo.value)
    assert "PID-" not in str(excinfo.value)


def test_scrub_drops_identifying_keys_at_any_depth() -> None:
    meta = {
        "modality": "CT",
        "PatientName": "DOE^JANE",
        "patient_id": "PID-12345",
        "extra": {
            "AccessionNumber": "A1",
            "spacing": [1, 1, 1],
            "items": [{"study_date": "20240101", "k": 1}],
        },
    }

    assert scrub(meta) == {"modality": "CT", "extra": {"spacing": [1, 1, 1], "items": [{"k": 1}]}}
    assert meta["PatientName"] == "DOE^JANE"  # the input is left alone


def test_identifying_tags_cover_the_basics() -> None:
    for tag in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "ReferringPhysicianName",
        "OperatorsName",
        "PerformingPhysicianName",
        "StudyDate",
    ):
        assert tag in IDENTIFYING_TAGS
