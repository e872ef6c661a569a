"""Bad input gives one line that names the file and the problem, never a library traceback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage.io

from mednas.errors import DataError
from mednas.io import read_image
from tests.io._helpers import pydicom_file


def _png_bytes(tmp_path: Path) -> bytes:
    skimage.io.imsave(
        tmp_path / "real.png", np.arange(64, dtype=np.uint8).reshape(8, 8), check_contrast=False
    )
    return (tmp_path / "real.png").read_bytes()


def _jpeg_bytes(tmp_path: Path) -> bytes:
    skimage.io.imsave(tmp_path / "real.jpg", np.zeros((8, 8, 3), dtype=np.uint8), check_contrast=False)
    return (tmp_path / "real.jpg").read_bytes()


def _zero_byte(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.touch()
    return path


def _truncated_dicom(tmp_path: Path) -> Path:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut_in_half.dcm"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_dicom_header(tmp_path: Path) -> Path:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut_early.dcm"
    path.write_bytes(data[:300])
    return path


def _no_pixel_data(tmp_path: Path) -> Path:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    return path


def _jpeg_named_png(tmp_path: Path) -> Path:
    path = tmp_path / "xray.png"
    path.write_bytes(_jpeg_bytes(tmp_path))
    return path


def _text_named_png(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("patient list, do not share\n")
    return path


def _truncated_png(tmp_path: Path) -> Path:
    data = _png_bytes(tmp_path)
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_named_nifti(tmp_path: Path) -> Path:
    path = tmp_path / "volume.nii"
    path.write_text("not a volume\n" * 40)
    return path


def _corrupt_nifti_gz(tmp_path: Path) -> Path:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    return path


def _nan_nifti(tmp_path: Path) -> Path:
    import nibabel as nib

    data = np.zeros((4, 5, 6), dtype=np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    path = tmp_path / "nan_voxels.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _nan_nrrd(tmp_path: Path) -> Path:
    import nrrd

    data = np.zeros((4, 5, 6), dtype=np.float32)
    data[2, 2, 2] = np.nan
    path = tmp_path / "nan_voxels.nrrd"
    nrrd.write(str(path), data)
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no_such_scan.nii.gz"


def _unsupported(tmp_path: Path) -> Path:
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\x00\x01\x02\x03" * 64)
    return path


def _folder_without_dicom(tmp_path: Path) -> Path:
    folder = tmp_path / "not_dicom_folder"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    return folder


def _dicom_renamed_png(tmp_path: Path) -> Path:
    path = tmp_path / "slice.png"
    shutil.copy(pydicom_file("CT_small.dcm"), path)
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero-byte": (_zero_byte, "empty"),
    "truncated-dicom": (_truncated_dicom, "pixel data"),
    "truncated-dicom-header": (_truncated_dicom_header, "no pixel data"),
    "missing-pixel-data": (_no_pixel_data, "no pixel data"),
    "jpeg-named-png": (_jpeg_named_png, "named PNG but the bytes are a JPEG file"),
    "text-named-png": (_text_named_png, "named PNG but the bytes are a text file"),
    "dicom-named-png": (_dicom_renamed_png, "named PNG but the bytes are a DICOM file"),
    "truncated-png": (_truncated_png, "cannot decode PNG"),
    "text-named-nifti": (_text_named_nifti, "named NIfTI but the bytes are a text file"),
    "corrupt-nifti-gz": (_corrupt_nifti_gz, "cannot read NIfTI"),
    "nan-nifti": (_nan_nifti, "not finite (1 NaN, 1 infinite)"),
    "nan-nrrd": (_nan_nrrd, "not finite (1 NaN"),
    "missing-path": (_missing, "no such file"),
    "unsupported-extension": (_unsupported, "unsupported file type '.xyz'"),
    "folder-without-dicom": (_folder_without_dicom, "no DICOM images"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_file(case: str, tmp_path) -> None:
    make, problem = CASES[case]
    path = make(tmp_path)

    with pytest.raises(DataError) as excinfo:
        read_image(path)

    message = str(excinfo.value)
    assert "\n" not in message
    assert path.name in message
    assert problem in message
    assert "Traceback" not in message
    assert excinfo.value.exit_code == 3


def test_series_choice_on_a_file_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match="series='2' applies to DICOM folders only"):
        read_image(pydicom_file("CT_small.dcm"), series="2")


def test_extensionless_dicom_is_recognised_by_content(tmp_path) -> None:
    path = tmp_path / "1.2.840.113619.2.55.3"  # UID-named files have a numeric "suffix"
    shutil.copy(pydicom_file("CT_small.dcm"), path)

    image = read_image(path)

    assert image.meta["format"] == "dicom"
    assert image.array.shape == (1, 128, 128)
