"""DICOM series and multi-frame files written from real volumes read back with the same values and geometry."""

from __future__ import annotations

import json
import logging

import numpy as np
import pydicom
import pytest

from mednas.errors import DataError
from mednas.io import MedImage, list_series, read_image
from mednas.testing._dicom import write_dicom_multiframe, write_dicom_series
from tests.io._helpers import assert_same_world_image, pydicom_file, voxel_world


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def test_shuffled_series_reads_back_same_values_and_corners(lung_crop: MedImage, tmp_path) -> None:
    files = write_dicom_series(
        lung_crop,
        tmp_path,
        rescale_intercept=-1024,
        shuffle_names=True,
        scramble_instance_numbers=True,
        seed=3,
    )
    # The writer really scrambled both: neither name order nor InstanceNumber follows the slices.
    by_name = sorted(range(len(files)), key=lambda k: files[k].name)
    instance = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert by_name != list(range(len(files)))
    assert instance != sorted(instance)

    image = read_image(tmp_path)

    assert image.array.shape == lung_crop.array.shape
    assert image.array.dtype.kind == "i"  # integral rescale keeps integers
    np.testing.assert_array_equal(image.array, lung_crop.array)
    np.testing.assert_allclose(image.corners_world(), lung_crop.corners_world(), atol=0.01, rtol=0)
    np.testing.assert_allclose(image.affine, lung_crop.affine, atol=1e-4, rtol=0)
    assert image.meta["modality"] == "CT"
    assert image.meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert image.meta["slice_spacing_irregular"] is False


def test_non_integral_rescale_gives_float32_values(lung_crop: MedImage, tmp_path) -> None:
    stored = lung_crop.array.astype(np.int64) + 1024
    values = (stored * 0.5 - 1024.25).astype(np.float32)
    source = MedImage(values, lung_crop.affine)
    write_dicom_series(source, tmp_path, rescale_slope=0.5, rescale_intercept=-1024.25, shuffle_names=True)

    image = read_image(tmp_path)

    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, values)


@pytest.mark.parametrize(
    ("axis", "degrees", "flip"),
    [((1.0, 1.0, 0.0), 25.0, (1, 1, 1)), ((0.2, -1.0, 0.4), -40.0, (1, -1, -1))],
    ids=["oblique", "oblique-negative-directions"],
)
def test_oblique_series_keeps_world_geometry(lung_crop: MedImage, tmp_path, axis, degrees, flip) -> None:
    affine = np.array(lung_crop.affine)
    affine[:3, :3] = _rotation(np.array(axis), degrees) @ affine[:3, :3] @ np.diag(flip)
    source = MedImage(lung_crop.array, affine)
    write_dicom_series(
        source, tmp_path, rescale_intercept=-1024, shuffle_names=True, scramble_instance_numbers=True
    )

    image = read_image(tmp_path)

    assert_same_world_image(image, source, atol_mm=0.01)
    # Every voxel centre lands where the source put it, not only the corners.
    for index in [(0, 0, 0), (63, 0, 5), (10, 55, 11), (63, 55, 0)]:
        ijk = np.round(np.linalg.inv(source.affine) @ [*voxel_world(image, index), 1.0])[:3].astype(int)
        assert image.array[(0, *index)] == source.array[(0, *ijk)]


def test_negative_y_direction_of_brain1_survives_dicom(brain_crop: MedImage, tmp_path) -> None:
    write_dicom_series(
        brain_crop, tmp_path, modality="MR", shuffle_names=True, scramble_instance_numbers=True
    )

    image = read_image(tmp_path)

    assert_same_world_image(image, brain_crop, atol_mm=0.01)
    # brain1's columns run towards +A; in DICOM its slices are ordered along the normal (row x column
    # direction), which for this left-handed grid points inferior: the slice axis comes back reversed.
    assert image.orientation == "LAI"
    np.testing.assert_array_equal(image.array, brain_crop.array[..., ::-1])


def test_irregular_slice_spacing_is_flagged(lung_crop: MedImage, tmp_path, caplog) -> None:
    files = write_dicom_series(lung_crop, tmp_path, rescale_intercept=-1024)
    files[5].unlink()  # a missing slice

    with caplog.at_level(logging.WARNING, logger="mednas.io"):
        image = read_image(tmp_path)

    assert image.meta["slice_spacing_irregular"] is True
    assert image.array.shape[-1] == 11
    assert any("irregular" in record.getMessage() for record in caplog.records)
    # The slices on either side of the gap are still where they were.
    np.testing.assert_allclose(voxel_world(image, (0, 0, 0)), voxel_world(lung_crop, (0, 0, 0)), atol=0.01)
    np.testing.assert_allclose(voxel_world(image, (0, 0, 10)), voxel_world(lung_crop, (0, 0, 11)), atol=0.01)


def test_non_dicom_files_in_the_folder_are_skipped(lung_crop: MedImage, tmp_path, caplog) -> None:
    write_dicom_series(lung_crop, tmp_path / "series", rescale_intercept=-1024)
    (tmp_path / "series" / "README.txt").write_text("scanned on Tuesday\n")
    (tmp_path / "series" / "thumbs.db").write_bytes(b"\x00\x01binary junk" * 20)

    with caplog.at_level(logging.INFO, logger="mednas.io"):
        image = read_image(tmp_path)  # recursive: the series sits in a sub-folder

    np.testing.assert_array_equal(image.array, lung_crop.array)
    assert any("skipped 2 of 14 files" in record.getMessage() for record in caplog.records)


def _two_series(lung_crop: MedImage, tmp_path):
    write_dicom_series(
        lung_crop, tmp_path / "a", rescale_intercept=-1024, series_description="AX LUNG", series_number=2
    )
    smaller = MedImage(lung_crop.array[..., :7], lung_crop.affine)
    write_dicom_series(
        smaller, tmp_path / "b", modality="MR", series_description="COR T2", series_number=5, seed=1
    )
    return tmp_path


def test_two_series_without_choice_lists_both(lung_crop: MedImage, tmp_path) -> None:
    folder = _two_series(lung_crop, tmp_path)

    with pytest.raises(DataError) as excinfo:
        read_image(folder)

    message = str(excinfo.value)
    assert "\n" not in message and str(folder) in message
    assert "2 DICOM series" in message
    assert "#2 'AX LUNG' CT 12 slices" in message
    assert "#5 'COR T2' MR 7 slices" in message
    assert "PID-12345" not in message and "DOE" not in message
    assert excinfo.value.exit_code == 3


@pytest.mark.parametrize("choice", ["COR T2", "cor t2", "5", "key"])
def test_series_selected_by_description_number_or_key(lung_crop: MedImage, tmp_path, choice) -> None:
    folder = _two_series(lung_crop, tmp_path)
    if choice == "key":
        choice = next(info.series_key for info in list_series(folder) if info.description == "COR T2")

    image = read_image(folder, series=choice)

    assert image.meta["modality"] == "MR"
    np.testing.assert_array_equal(image.array, lung_crop.array[..., :7])


def test_unknown_series_choice_lists_what_is_there(lung_crop: MedImage, tmp_path) -> None:
    folder = _two_series(lung_crop, tmp_path)

    with pytest.raises(DataError, match=r"no DICOM series matches series='SAG'.*AX LUNG.*COR T2"):
        read_image(folder, series="SAG")


def test_list_series_describes_each_series(lung_crop: MedImage, tmp_path) -> None:
    folder = _two_series(lung_crop, tmp_path)

    infos = list_series(folder)

    assert [(i.number, i.description, i.modality, i.n_files, i.shape) for i in infos] == [
        (2, "AX LUNG", "CT", 12, (64, 56, 12)),
        (5, "COR T2", "MR", 7, (64, 56, 7)),
    ]
    text = json.dumps([info.to_dict() for info in infos])
    assert "PID-12345" not in text and "DOE^JANE" not in text
    assert len({info.series_key for info in infos}) == 2


def test_enhanced_multiframe_uses_per_frame_positions(lung_crop: MedImage, tmp_path) -> None:
    stored = lung_crop.array.astype(np.int64) + 1024
    values = (stored * 0.5 - 1024.25).astype(np.float32)
    source = MedImage(values, lung_crop.affine)
    path = write_dicom_multiframe(
        source, tmp_path / "enhanced.dcm", rescale_slope=0.5, rescale_intercept=-1024.25, shuffle_frames=True
    )

    image = read_image(path)

    np.testing.assert_array_equal(image.array, values)
    np.testing.assert_allclose(image.affine, source.affine, atol=1e-4, rtol=0)
    assert image.meta["n_frames"] == 12


def test_enhanced_ct_from_pydicom_matches_its_plane_positions() -> None:
    path = pydicom_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array  # (frames, rows, columns)

    image = read_image(path)

    assert image.array.shape == (1, 512, 512, 2)
    for frame, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        lps = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        ras = lps * [-1, -1, 1]
        k = int(np.argmin([np.linalg.norm(voxel_world(image, (0, 0, k)) - ras) for k in range(2)]))
        np.testing.assert_allclose(voxel_world(image, (0, 0, k)), ras, atol=1e-3)
        np.testing.assert_array_equal(image.array[0, :, :, k], pixels[frame].T.astype(np.int64) - 1024)


def test_two_images_at_one_position_are_refused(lung_crop: MedImage, tmp_path) -> None:
    write_dicom_series(lung_crop, tmp_path / "a", rescale_intercept=-1024, series_uid="1.2.3.4")
    write_dicom_series(lung_crop, tmp_path / "b", rescale_intercept=-1024, series_uid="1.2.3.4", seed=9)

    with pytest.raises(DataError, match="several volumes"):
        read_image(tmp_path)
