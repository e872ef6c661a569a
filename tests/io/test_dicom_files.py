"""Single DICOM files that pydicom ships: rescale, multi-frame, radiographs, colour and compressed twins."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mednas.errors import DataError
from mednas.io import read_image
from tests.io._helpers import pydicom_file, voxel_world


def test_ct_slice_is_rescaled_to_hounsfield_units() -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)

    image = read_image(path)

    assert image.array.shape == (1, 128, 128)  # one slice: a 2D image (C, X=columns, Y=rows)
    assert image.array.dtype.kind == "i"
    expected = ds.pixel_array.T.astype(np.int64) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(image.array[0], expected)
    assert image.meta["modality"] == "CT"
    assert image.array.min() < -800  # air in HU, not the stored value


def test_single_slice_geometry_is_dicom_position_in_ras() -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)

    image = read_image(path)

    # Voxel (i=column, j=row) sits at IPP + i * column spacing * row cosine + j * row spacing * column cosine (LPS).
    for i, j in [(0, 0), (127, 0), (0, 127), (40, 90)]:
        lps = ipp + i * column_spacing * iop[:3] + j * row_spacing * iop[3:]
        np.testing.assert_allclose(voxel_world(image, (i, j)), lps * [-1, -1, 1], atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_compressed_mr_equals_its_uncompressed_twin(name: str) -> None:
    reference = read_image(pydicom_file("MR_small.dcm"))

    image = read_image(pydicom_file(name))

    np.testing.assert_array_equal(image.array, reference.array)
    np.testing.assert_allclose(image.affine, reference.affine)


def test_multiframe_mr_keeps_its_ten_frames_in_order() -> None:
    path = pydicom_file("emri_small.dcm")
    pixels = pydicom.dcmread(path).pixel_array  # (frames, rows, columns)

    image = read_image(path)

    assert image.array.shape == (1, 64, 64, 10)
    np.testing.assert_array_equal(image.array[0], pixels.transpose(2, 1, 0))
    np.testing.assert_array_equal(
        read_image(pydicom_file("emri_small_jpeg_2k_lossless.dcm")).array, image.array
    )


@pytest.fixture(scope="module")
def chest_cr():
    return read_image(pydicom_file("RG1_UNCR.dcm"))


def test_monochrome1_radiograph_is_windowed_and_inverted(chest_cr) -> None:
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(pydicom_file("RG1_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = ds.pixel_array
    windowed = apply_voi_lut(stored.astype(np.float64), ds)
    top = 2**ds.BitsStored - 1  # window output spans the stored range 0 .. 2**15 - 1

    image = chest_cr

    assert image.array.shape == (1, 1841, 1955)
    assert image.meta["photometric"] == "MONOCHROME2" and image.meta["photometric_source"] == "MONOCHROME1"
    for row, column in [(0, 0), (700, 550), (1000, 900), (1954, 1840)]:
        assert image.array[0, column, row] == pytest.approx(top - windowed[row, column], abs=1e-2)


def test_inverted_radiograph_shows_dark_lungs(chest_cr) -> None:
    # array[0, x, y]: x = column, y = row. Right lung field vs the spine/mediastinum at the same height.
    lung = chest_cr.array[0, 500:700, 600:900].mean()
    mediastinum = chest_cr.array[0, 850:1000, 600:900].mean()
    assert lung < mediastinum - 5000


def test_jpeg2000_radiograph_equals_uncompressed(chest_cr) -> None:
    image = read_image(pydicom_file("RG1_J2KR.dcm"))

    np.testing.assert_array_equal(image.array, chest_cr.array)


def test_rgb_secondary_capture_is_three_channels() -> None:
    path = pydicom_file("SC_rgb.dcm")
    pixels = pydicom.dcmread(path).pixel_array  # (rows, columns, 3)

    image = read_image(path)

    assert image.array.shape == (3, 100, 100)
    np.testing.assert_array_equal(image.array, pixels.transpose(2, 1, 0))
    assert image.meta["photometric"] == "RGB"


def test_missing_decoder_names_the_install_command(monkeypatch) -> None:
    from pydicom.pixels import get_decoder

    path = pydicom_file("MR_small_jp2klossless.dcm")
    decoder = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    monkeypatch.setattr(decoder, "_available", {})  # as if pylibjpeg-openjpeg were not installed

    with pytest.raises(DataError) as excinfo:
        read_image(path)

    message = str(excinfo.value)
    assert path.name in message and 'pip install "mednas[dicom]"' in message and "\n" not in message


def test_dicom_without_preamble_is_read(tmp_path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "old_style.dcm"
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"

    image = read_image(path)

    np.testing.assert_array_equal(image.array, read_image(pydicom_file("CT_small.dcm")).array)


def test_monochrome1_without_window_is_inverted_in_its_bit_range(tmp_path) -> None:
    ds = pydicom.dcmread(pydicom_file("RG1_UNCR.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    del ds.PixelSpacing  # "0.000\\0.000" in this file
    ds.ImagerPixelSpacing = [0.2, 0.15]  # (between rows, between columns)
    ds.Modality = "DX"
    path = tmp_path / "dx.dcm"
    ds.save_as(path)
    stored = ds.pixel_array

    image = read_image(path)

    assert image.array.dtype.kind in "iu"
    np.testing.assert_array_equal(image.array[0], (2**15 - 1) - stored.T.astype(np.int64))
    assert image.spacing == pytest.approx((0.15, 0.2))
    assert image.meta["spacing_source"] == "ImagerPixelSpacing"
