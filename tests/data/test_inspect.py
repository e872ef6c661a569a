"""``mednas inspect``: the same world geometry for an NRRD, a NIfTI and a DICOM series of one real volume; series
listings for folders of several; one-line errors; nothing identifying in what it prints."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from mednas.cli import main
from mednas.io import IMAGE_KEYS, MedImage, read_image, write_nifti
from mednas.testing import FAKE_IDENTIFYING, write_dicom_series
from tests._shared_data import shared_file
from tests.data._builders import AFFINE, volume


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _corners(summary: dict) -> np.ndarray:
    shape = summary["shape"]
    idx = np.array(list(itertools.product(*[(0, s - 1) for s in shape])), dtype=float)
    world = (np.asarray(summary["affine"]) @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
    return world[np.lexsort(world.T[::-1])]


@pytest.fixture(scope="module")
def brain1_three_ways(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pyradiomics brain1 (MR, 256 x 256 x 25, negative y direction) as its NRRD, a NIfTI and a DICOM series."""
    nrrd = shared_file("pyradiomics", "brain1_image.nrrd")
    image = read_image(nrrd)
    root = tmp_path_factory.mktemp("brain1")
    nifti = write_nifti(image, root / "brain1.nii.gz")
    write_dicom_series(
        image, root / "dicom", modality="MR", shuffle_names=True, scramble_instance_numbers=True
    )
    return {"nrrd": nrrd, "nifti": nifti, "dicom": root / "dicom"}


def test_nrrd_nifti_and_dicom_series_report_the_same_world_geometry(
    brain1_three_ways: dict[str, Path], capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    summaries = {}
    for kind, path in brain1_three_ways.items():
        code, out, err = _inspect(capsys, str(path), "--json")
        assert code == 0, err
        summaries[kind] = json.loads(out)
        assert tuple(sorted(summaries[kind])) == tuple(sorted(IMAGE_KEYS))  # exactly those keys
    ref = summaries["nrrd"]
    assert ref["shape"] == [256, 256, 25] and ref["min"] == 0 and ref["max"] == 3057
    for kind in ("nifti", "dicom"):
        s = summaries[kind]
        assert sorted(s["shape"]) == sorted(ref["shape"])
        np.testing.assert_allclose(sorted(s["spacing"]), sorted(ref["spacing"]), atol=1e-4)
        np.testing.assert_allclose(_corners(s), _corners(ref), atol=0.01)  # same corner voxels in world mm
        assert (s["min"], s["max"]) == (ref["min"], ref["max"])
        assert s["mean"] == pytest.approx(ref["mean"], rel=1e-9)
    assert summaries["dicom"]["modality"] == "MR"
    assert summaries["nrrd"]["modality"] is None and summaries["nifti"]["modality"] is None


def test_text_output_shows_every_field(
    brain1_three_ways: dict[str, Path], capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    code, out, _ = _inspect(capsys, str(brain1_three_ways["nrrd"]))
    assert code == 0
    assert "shape     256 x 256 x 25" in out
    assert "spacing   0.78125 x 0.78125 x 6.5 mm" in out
    assert "orient.   LAS" in out
    for label in (
        "affine",
        "dtype     int16",
        "min       0",
        "max       3057",
        "mean",
        "modality  not recorded",
    ):
        assert label in out
    assert len([line for line in out.splitlines() if line.startswith(" " * 12)]) == 3  # affine rows 2-4


def test_folder_of_several_series_is_listed_without_identifying_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    image, _ = volume((10, 9, 4))
    write_dicom_series(
        MedImage(image, AFFINE),
        tmp_path / "study" / "t1",
        modality="MR",
        series_number=3,
        series_description="AX T1",
        seed=1,
    )
    write_dicom_series(
        MedImage(image[:, :, :8], AFFINE),
        tmp_path / "study" / "ct",
        modality="CT",
        series_number=5,
        series_description="CHEST CT",
        seed=2,
    )
    folder = tmp_path / "study"
    code, out, _ = _inspect(capsys, str(folder))
    assert code == 0
    assert (
        out.splitlines()[0] == f"{folder}: 2 DICOM series (choose one with --series KEY|NUMBER|DESCRIPTION)"
    )
    rows = out.splitlines()[2:]
    assert rows[0].split()[:5] == ["3", "MR", "4", "10", "x"] and rows[0].endswith("AX T1")
    assert rows[1].split()[:3] == ["5", "CT", "4"] and rows[1].endswith("CHEST CT")
    code, out_json, _ = _inspect(capsys, str(folder), "--json")
    listing = json.loads(out_json)["series"]
    assert [(s["number"], s["description"], s["modality"], s["files"], s["shape"]) for s in listing] == [
        (3, "AX T1", "MR", 4, [10, 9, 4]),
        (5, "CHEST CT", "CT", 4, [10, 8, 4]),
    ]
    for text in (out, out_json):
        for value in FAKE_IDENTIFYING.values():
            assert value not in text
    code, out, _ = _inspect(capsys, str(folder), "--series", "5", "--json")
    assert code == 0 and json.loads(out)["shape"] == [10, 8, 4] and json.loads(out)["modality"] == "CT"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.nii.gz", None, "no such file or folder"),
        ("empty.nrrd", b"", "file is empty (0 bytes)"),
        ("notes.txt", b"hello", "unsupported file type '.txt'"),
    ],
)
def test_bad_path_is_a_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_mednas_logger: None,
    name: str,
    content: bytes | None,
    problem: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out, err = _inspect(capsys, str(path), "--json")
    assert code == 3 and out == ""
    assert err.strip().splitlines() == [f"mednas: error: {path}: {err.split(f'{path}: ', 1)[1].strip()}"]
    assert problem in err
