"""``mednas predict --format dicom-seg``: a DICOM SEG that highdicom and pydicom read back onto the source grid.

The series are built from the real images in ``../shared/data`` (cropped, one axis flipped so the DICOM slice order
runs against the file order, file names shuffled) and carry fake identifying values, so a test can see what the SEG
copies from its source and that it adds nothing identifying of its own.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest

import mednas
from mednas.cli import main
from mednas.io import IDENTIFYING_TAGS, MedImage, read_image, write_nifti
from mednas.testing import FAKE_IDENTIFYING, write_dicom_multiframe, write_dicom_series
from tests._shared_data import shared_file

hd = pytest.importorskip("highdicom")

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# The source also names its scanner and site: the SEG must not carry those into a contributing-equipment item.
_SOURCE_VALUES = {**FAKE_IDENTIFYING, "Manufacturer": "ACME", "StationName": "CT-ROOM-7"}
# Values the SEG gets for itself (its own UIDs, creation time, "device" serial), not from the patient or the visit.
_OWN = {
    "DeviceSerialNumber",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "ContentDate",
    "ContentTime",
    "SeriesDate",
    "SeriesTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
}


def _crop(
    image: MedImage, start: tuple[int, int, int], size: tuple[int, int, int], *, flip_y: bool = False
) -> MedImage:
    """Crop; ``flip_y`` reverses the Y axis (same world content), turning the DICOM slice normal around."""
    (x0, y0, z0), (sx, sy, sz) = start, size
    array = np.asarray(image.array)[:, x0 : x0 + sx, y0 : y0 + sy, z0 : z0 + sz]
    affine = np.asarray(image.affine, dtype=float).copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([x0, y0, z0], dtype=float)
    if flip_y:
        array = array[:, :, ::-1, :]
        affine[:3, 3] += affine[:3, 1] * (sy - 1)
        affine[:3, 1] *= -1
    return MedImage(np.ascontiguousarray(array), affine)


def _source(folder: Path) -> pydicom.Dataset:
    return pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)


def _seg_on_grid(seg_file: Path, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The SEG's label map placed, voxel by voxel through world coordinates, on the grid ``(affine, shape)``."""
    vol = hd.seg.segread(seg_file).get_volume(combine_segments=True)
    labels = np.asarray(vol.array)
    idx = np.indices(labels.shape[:3]).reshape(3, -1)
    world = _LPS @ np.asarray(vol.affine) @ np.vstack([idx, np.ones(idx.shape[1])])
    target = np.linalg.inv(affine) @ world
    np.testing.assert_allclose(target, np.rint(target), atol=1e-3)  # every SEG pixel sits on a source voxel
    target = np.rint(target[:3]).astype(int)
    assert labels.size == int(np.prod(shape)), (labels.shape, shape)
    assert np.all(target >= 0) and np.all(np.array(shape) > target.T)
    out = np.full(shape, 255, dtype=np.uint8)
    out[tuple(target)] = labels.reshape(-1)
    assert (out != 255).all()  # one SEG pixel per source voxel: a bijection
    return out


def _assert_nothing_added(seg_file: Path, source: pydicom.Dataset, tmp_path: Path) -> None:
    """Identifying values in the SEG are the source's own; no site, staff, path or host name appears."""
    seg = pydicom.dcmread(seg_file)
    for elem in seg.iterall():
        if elem.keyword in IDENTIFYING_TAGS and elem.VR != "SQ" and elem.keyword not in _OWN and elem.value:
            assert str(elem.value) == str(source.get(elem.keyword)), elem.keyword
    assert str(seg.PatientName) == str(source.PatientName) and seg.PatientID == source.PatientID
    assert seg.DeviceSerialNumber == "none"
    raw = seg_file.read_bytes()
    for absent in ("St Example Hospital", "OPERATOR^OLGA", "CT-ROOM-7", str(tmp_path)):
        assert absent.encode() not in raw, absent
    host = socket.gethostname()
    assert len(host) < 6 or host.encode() not in raw


def test_dicom_seg_matches_the_nifti_mask(
    seg_bundle: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lung1 is stored LPS: flipped, its slices are read in the reverse of the order they were written in.
    ct = read_image(shared_file("pyradiomics", "lung1_image.nrrd"))
    series = tmp_path / "series"
    write_dicom_series(
        _crop(ct, (256, 183, 11), (24, 24, 11), flip_y=True),
        series,
        modality="CT",
        identifying=_SOURCE_VALUES,
        shuffle_names=True,
    )
    bundle = str(seg_bundle.path)
    assert main(["predict", bundle, str(series), "--out", str(tmp_path / "nifti")]) == 0
    assert (
        main(["predict", bundle, str(series), "--out", str(tmp_path / "seg"), "--format", "dicom-seg"]) == 0
    )
    assert "wrote series_seg.dcm, predictions.csv" in capsys.readouterr().out
    seg_file = tmp_path / "seg" / "series_seg.dcm"
    assert not (tmp_path / "seg" / "series_seg.nii.gz").exists()

    nifti = nib.load(tmp_path / "nifti" / "series_seg.nii.gz")
    expected = np.asarray(nifti.dataobj)
    # The seeded tiny model marks lesion voxels on this crop; an empty mask would make the comparison vacuous.
    assert expected.sum() > 0
    np.testing.assert_array_equal(_seg_on_grid(seg_file, nifti.affine, expected.shape), expected)

    source = _source(series)
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in series.iterdir()}
    model = mednas.load(seg_bundle.path)
    name, version = model.info["task"]["name"], model.metadata["version"]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(model.class_names[1:]) == ["lesion"]
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == (name, version)
    assert algo.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert seg.SeriesDescription == f"mednas {name}" and seg.Manufacturer == "mednas"
    _assert_nothing_added(seg_file, source, tmp_path)

    rows = list(csv.DictReader((tmp_path / "seg" / "predictions.csv").open()))
    assert rows[0]["mask"] == "series_seg.dcm" and int(rows[0]["voxels_lesion"]) == int(expected.sum())


@pytest.mark.parametrize("layout", ["series", "multiframe"])
def test_dicom_seg_writer_places_real_labels_on_the_source_grid(layout: str, tmp_path: Path) -> None:
    from mednas.bundle._dicom_seg import Algorithm, write_dicom_seg

    mri = read_image(shared_file("pyradiomics", "brain1_image.nrrd"))
    tumour = read_image(shared_file("pyradiomics", "brain1_label.nrrd"))
    # brain1's Y axis runs anterior in LPS: its slices are read in the reverse of the order they were written in.
    start, size = (160, 80, 10), (50, 76, 9)
    image, truth = _crop(mri, start, size), _crop(tumour, start, size)
    labels = (truth.array[0] > 0).astype(np.uint8)
    labels[labels.shape[0] // 2 :][labels[labels.shape[0] // 2 :] > 0] = 2  # a second class: asymmetric
    assert (labels == 1).sum() > 50 and (labels == 2).sum() > 50
    if layout == "series":
        source = tmp_path / "series"
        write_dicom_series(image, source, modality="MR", identifying=_SOURCE_VALUES, shuffle_names=True)
    else:
        source = write_dicom_multiframe(
            image,
            tmp_path / "enhanced" / "mf.dcm",
            modality="MR",
            identifying=_SOURCE_VALUES,
            shuffle_frames=True,
        )
    dicom = read_image(source)  # the grid mednas predicts on: slice order along the normal, not the file's
    # The labels on that grid, through world coordinates (the crop and the DICOM grid hold the same voxels).
    idx = np.indices(dicom.spatial_shape).reshape(3, -1)
    world = dicom.affine @ np.vstack([idx, np.ones(idx.shape[1])])
    back = np.rint(np.linalg.inv(image.affine) @ world)[:3].astype(int)
    mask = labels[tuple(back)].reshape(dicom.spatial_shape)
    assert not np.array_equal(mask, labels)  # the DICOM grid really is ordered differently
    algorithm = Algorithm("brain-tumour", "1.2.3", ("background", "tumour", "oedema"), (1,), "retrained")
    seg_file = write_dicom_seg(
        MedImage(mask[None], dicom.affine), source, tmp_path / "out" / "x_seg.dcm", algorithm
    )

    np.testing.assert_array_equal(_seg_on_grid(seg_file, dicom.affine, dicom.spatial_shape), mask)
    seg = hd.seg.segread(seg_file)
    assert [seg.get_segment_description(n).SegmentLabel for n in (1, 2)] == ["tumour", "oedema"]
    assert seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"
    assert seg.get_segment_description(2).SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    _assert_nothing_added(seg_file, _source(source if layout == "series" else source.parent), tmp_path)


def test_classification_of_a_dicom_input_writes_json_with_its_uids(
    cls_bundle: SimpleNamespace, tmp_path: Path
) -> None:
    xray = np.load(shared_file("pneumoniamnist", "pneumoniamnist-dev.npz"))["val_images"][0]
    series = tmp_path / "chest"
    files = write_dicom_series(MedImage(xray.T[None, :, :, None].astype(np.float32), np.eye(4)), series)
    out = tmp_path / "out"
    preds, written = mednas.predict(cls_bundle.path, series, out, format="dicom-seg")
    assert sorted(p.name for p in written) == ["chest.json", "predictions.csv"]
    record = json.loads((out / "chest.json").read_text())
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert record["referenced"] == {
        "study_instance_uid": source.StudyInstanceUID,
        "series_instance_uid": source.SeriesInstanceUID,
        "sop_instance_uids": [source.SOPInstanceUID],
    }
    row = next(csv.DictReader((out / "predictions.csv").open()))
    assert record["label"] == row["label"] == preds[0].label
    assert record["decision"] == (row["decision"] == "1")
    assert record["threshold"] == pytest.approx(float(row["threshold"]))
    assert record["probabilities"]["finding"] == pytest.approx(float(row["p_finding"]), abs=1e-6)
    assert record["model"]["name"] == "tiny-cls" and record["findings"] == ["finding"]
    text = (out / "chest.json").read_text()
    for absent in (*FAKE_IDENTIFYING.values(), str(tmp_path)):
        assert absent not in text, absent


def test_dicom_seg_on_a_nifti_input_is_one_line_and_writes_nothing(
    seg_bundle: SimpleNamespace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan = write_nifti(MedImage(np.zeros((1, 8, 8, 8), np.float32), np.eye(4)), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", str(seg_bundle.path), str(scan), "--out", str(out), "--format", "dicom-seg"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(scan) in err[0] and "not DICOM" in err[0], err
    assert not out.exists()
    with pytest.raises(mednas.DataError, match="scan.nii.gz: --format dicom-seg needs a DICOM"):
        mednas.predict(seg_bundle.path, scan, out, format="dicom-seg")
    assert not out.exists()
    from mednas.bundle import _dicom_seg

    monkeypatch.setattr(_dicom_seg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        mednas.MednasError, match=r'highdicom, which is not installed: pip install "mednas\[dicom\]"'
    ):
        _dicom_seg.check_dicom_inputs([tmp_path], seg=True)
