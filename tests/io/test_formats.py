"""NRRD, NIfTI and raster reading, and NIfTI writing: one volume, one geometry, whatever the format."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io

from mednas.errors import DataError
from mednas.io import MedImage, read_image, write_nifti
from mednas.testing._dicom import write_dicom_series
from tests._shared_data import shared_file
from tests.io._helpers import assert_same_world_image, voxel_world

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _write_nrrd(image: MedImage, path) -> None:
    """Write a (1, X, Y, Z) image as Slicer does: LPS space directions and origin."""
    import nrrd

    lps = _RAS_TO_LPS @ np.asarray(image.affine)
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
    }
    nrrd.write(str(path), np.asarray(image.array[0]), header, index_order="F", compression_level=1)


def _write_nifti_with_nibabel(image: MedImage, path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(image.array[0]), np.asarray(image.affine)), str(path))


def test_brain1_nrrd_negative_y_direction_in_ras(brain1: MedImage) -> None:
    # Header: space LPS, directions (0.78125,0,0) (0,-0.78125,0) (0,0,6.5), origin (-99.609375, 99.609375, -78).
    assert brain1.array.shape == (1, 256, 256, 25)
    assert brain1.array.dtype == np.int16
    np.testing.assert_allclose(voxel_world(brain1, (0, 0, 0)), [99.609375, -99.609375, -78.0], atol=1e-6)
    # y index 255: LPS y = 99.609375 - 255 * 0.78125 = -99.609375, i.e. RAS y = +99.609375 (anterior).
    np.testing.assert_allclose(voxel_world(brain1, (0, 255, 0)), [99.609375, 99.609375, -78.0], atol=1e-6)
    np.testing.assert_allclose(voxel_world(brain1, (255, 0, 24)), [-99.609375, -99.609375, 78.0], atol=1e-6)
    assert brain1.orientation == "LAS"
    assert brain1.spacing == pytest.approx((0.78125, 0.78125, 6.5))
    assert brain1.meta["format"] == "nrrd" and brain1.meta["space"] == "left-posterior-superior"


def test_brain1_label_lies_on_the_image_grid(brain1: MedImage) -> None:
    label = read_image(shared_file("pyradiomics", "brain1_label.nrrd"))

    np.testing.assert_array_equal(label.affine, brain1.affine)
    assert set(np.unique(label.array)) == {0, 1}


@pytest.mark.parametrize("case", ["lung_crop", "brain_crop"])
def test_same_volume_as_nrrd_nifti_and_dicom(case: str, request, tmp_path) -> None:
    source: MedImage = request.getfixturevalue(case)
    _write_nrrd(source, tmp_path / "image.nrrd")
    _write_nifti_with_nibabel(source, tmp_path / "image.nii.gz")
    write_dicom_series(source, tmp_path / "dicom", rescale_intercept=-1024, shuffle_names=True)

    from_nrrd = read_image(tmp_path / "image.nrrd")
    from_nifti = read_image(tmp_path / "image.nii.gz")
    from_dicom = read_image(tmp_path / "dicom")

    np.testing.assert_allclose(from_nrrd.affine, source.affine, atol=1e-3, rtol=0)
    np.testing.assert_allclose(from_nifti.affine, source.affine, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(from_nrrd.array, source.array)
    np.testing.assert_array_equal(from_nifti.array, source.array)
    # DICOM orders slices along the slice normal, which reverses brain1's left-handed grid: compare in world.
    assert_same_world_image(from_dicom, from_nrrd, atol_mm=1e-3)
    if case == "lung_crop":
        np.testing.assert_allclose(from_dicom.affine, from_nrrd.affine, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(from_dicom.array, from_nrrd.array)


def test_nrrd_vector_axis_becomes_channels(tmp_path) -> None:
    import nrrd

    data = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2, order="F")
    header = {
        "space": "right-anterior-superior",
        "kinds": ["vector", "domain", "domain", "domain"],
        "space directions": [[np.nan] * 3, [2.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]],
        "space origin": [1.0, 2.0, 3.0],
    }
    nrrd.write(str(tmp_path / "v.nrrd"), data, header, index_order="F")

    image = read_image(tmp_path / "v.nrrd")

    assert image.array.shape == (3, 4, 5, 2)
    np.testing.assert_array_equal(image.array, data)
    np.testing.assert_allclose(image.affine, [[2, 0, 0, 1], [0, 2, 0, 2], [0, 0, 3, 3], [0, 0, 0, 1]])


def test_colin27_nifti_geometry() -> None:
    image = read_image(shared_file("colin27", "ch2bet.nii.gz"))

    assert image.array.shape == (1, 181, 217, 181)
    assert image.orientation == "RAS"
    assert image.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert image.meta["format"] == "nifti"


def test_write_nifti_round_trip_is_atomic_and_keeps_geometry(brain_crop: MedImage, tmp_path) -> None:
    mask = MedImage(brain_crop.array > 300, brain_crop.affine)

    path = write_nifti(mask, tmp_path / "out" / "mask.nii.gz")
    back = read_image(path)

    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.nii.gz"]  # no temporary file left
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))
    np.testing.assert_allclose(back.affine, brain_crop.affine, atol=1e-5)
    # Same image, same bytes: the gzip header carries no time stamp.
    assert write_nifti(mask, tmp_path / "again.nii.gz").read_bytes() == path.read_bytes()


def test_write_nifti_multichannel_reads_back_channel_first(lung_crop: MedImage, tmp_path) -> None:
    probabilities = np.stack([np.zeros(lung_crop.spatial_shape), np.ones(lung_crop.spatial_shape)]).astype(
        np.float32
    )
    probabilities[1, 0, 0, 0] = 0.25

    back = read_image(write_nifti(MedImage(probabilities, lung_crop.affine), tmp_path / "p.nii"))

    assert back.array.shape == (2, 64, 56, 12)
    np.testing.assert_array_equal(back.array, probabilities)


def test_write_nifti_refuses_other_names(lung_crop: MedImage, tmp_path) -> None:
    with pytest.raises(DataError, match=r"p\.nrrd.*\.nii or \.nii\.gz"):
        write_nifti(lung_crop, tmp_path / "p.nrrd")


def test_scaled_nifti_gives_float32(tmp_path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii"))

    image = read_image(tmp_path / "scaled.nii")

    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], np.arange(24).reshape(2, 3, 4) * 0.5 + 10.0)


# Rows 0..2, columns 0..4: every pixel distinct, so a transposition shows.
_GREY = (np.arange(15).reshape(3, 5) * 16).astype(np.uint8)


def test_png_grey_is_columns_then_rows(tmp_path) -> None:
    skimage.io.imsave(tmp_path / "grey.png", _GREY, check_contrast=False)

    image = read_image(tmp_path / "grey.png")

    assert image.array.shape == (1, 5, 3)  # (C, X = columns, Y = rows)
    assert image.array[0, 4, 0] == _GREY[0, 4]  # top-right pixel
    np.testing.assert_array_equal(image.array[0], _GREY.T)
    np.testing.assert_array_equal(image.affine, np.eye(4))
    assert image.spacing == (1.0, 1.0)
    assert image.meta["format"] == "png" and image.meta["photometric"] == "MONOCHROME2"


def test_png_16_bit_keeps_values(tmp_path) -> None:
    deep = _GREY.astype(np.uint16) * 250
    skimage.io.imsave(tmp_path / "deep.png", deep, check_contrast=False)

    image = read_image(tmp_path / "deep.png")

    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array[0], deep.T)


def test_png_rgba_gives_three_channels(tmp_path) -> None:
    rgba = np.stack([_GREY, 255 - _GREY, _GREY // 2, np.full_like(_GREY, 255)], axis=-1)
    skimage.io.imsave(tmp_path / "rgba.png", rgba, check_contrast=False)

    image = read_image(tmp_path / "rgba.png")

    assert image.array.shape == (3, 5, 3)
    np.testing.assert_array_equal(image.array, rgba[..., :3].transpose(2, 1, 0))
    assert image.meta["photometric"] == "RGB"


def test_jpeg_rgb(tmp_path) -> None:
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :24, 0] = 200  # left half red
    skimage.io.imsave(tmp_path / "photo.jpg", rgb, quality=95)

    image = read_image(tmp_path / "photo.jpg")

    assert image.array.shape == (3, 48, 32)
    assert image.array[0, :20].mean() > 150 and image.array[0, 28:].mean() < 50  # red on the left (low X)
    assert image.meta["format"] == "jpeg"


def test_tiff_stack_is_a_volume(tmp_path) -> None:
    import tifffile

    stack = np.stack([_GREY + k for k in range(4)]).astype(np.uint8)  # (pages, rows, columns)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")

    image = read_image(tmp_path / "stack.tif")

    assert image.array.shape == (1, 5, 3, 4)
    np.testing.assert_array_equal(image.array[0], stack.transpose(2, 1, 0))
    assert image.meta["format"] == "tiff"


def test_tiff_single_page(tmp_path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "page.tiff", _GREY)

    image = read_image(tmp_path / "page.tiff")

    np.testing.assert_array_equal(image.array[0], _GREY.T)
