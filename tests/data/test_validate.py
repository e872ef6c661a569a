"""Validation lists every bad case with a one-line reason naming the file, and a search refuses to start on them.

Each bad input of issue 3 goes through a real layout (CSV sheets of PNG/DICOM radiographs or NIfTI volumes), so
the message a user sees is the one checked, at ``validate`` and at ``search``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from mednas.cli import main
from mednas.data import load_dataset, plan_data, validate_dataset
from mednas.errors import DataError
from mednas.io import MedImage, write_nifti
from mednas.rundir import RunDir
from tests.data._builders import AFFINE, cls_task, config, png, seg_case, seg_task, volume, write_csv

SALT = "test-salt"


def _pydicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


# --- bad radiographs (2D classification sheet) ---------------------------------------------------------------


def _truncated_dicom(path: Path) -> None:
    data = _pydicom("CT_small.dcm").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _dicom_without_pixels(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(_pydicom("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(path)


def _renamed_jpeg(path: Path) -> None:
    from skimage import io as skio

    skio.imsave(path.with_suffix(".jpg"), np.full((16, 16), 90, np.uint8), check_contrast=False)
    path.with_suffix(".jpg").rename(path)


def _non_finite(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        pixels = np.full((1, 16, 16), 0.5, np.float32)
        pixels[0, 3, 4] = value
        write_nifti(MedImage(pixels, np.eye(4)), path)

    return write


RADIOGRAPH_CASES = {
    "truncated DICOM": ("cut.dcm", _truncated_dicom, "truncated or corrupt"),
    "zero-byte file": ("empty.png", lambda p: p.write_bytes(b""), "file is empty (0 bytes)"),
    "renamed PNG": ("photo.png", _renamed_jpeg, "named PNG but the bytes are a JPEG file"),
    "missing pixel data": ("nopixels.dcm", _dicom_without_pixels, "has no pixel data"),
    "NaN voxels": ("nan.nii", _non_finite(float("nan")), "not finite (1 NaN, 0 infinite)"),
    "Inf voxels": ("inf.nii", _non_finite(float("inf")), "not finite (0 NaN, 1 infinite)"),
    "missing path": ("gone.png", lambda p: None, "no such file or folder"),
    "unsupported extension": (
        "scan.bmp",
        lambda p: p.write_bytes(b"BM" + bytes(64)),
        "unsupported file type '.bmp'",
    ),
}


def _radiograph_sheet(root: Path, bad_name: str, write: Callable[[Path], None]) -> tuple[dict, Path]:
    rows = []
    for i in range(6):
        png(root / f"ok{i}.png", seed=i, bright=i % 2 == 1)
        rows.append({"image": f"ok{i}.png", "label": i % 2, "patient": f"pt{i}"})
    shutil.copy(_pydicom("CT_small.dcm"), root / "real.dcm")  # a good DICOM radiograph-sized image too
    rows.append({"image": "real.dcm", "label": 0, "patient": "pt6"})
    bad = root / bad_name
    write(bad)
    rows.append({"image": bad_name, "label": 1, "patient": "pt7"})
    return cls_task({"format": "csv", "path": str(write_csv(root / "cases.csv", rows))}), bad


@pytest.mark.parametrize("kind", list(RADIOGRAPH_CASES))
def test_bad_image_is_listed_with_its_file_and_search_refuses(tmp_path: Path, kind: str) -> None:
    name, write, problem = RADIOGRAPH_CASES[kind]
    task_map, bad = _radiograph_sheet(tmp_path, name, write)
    _assert_one_bad_case(config(task_map), tmp_path, bad, problem)


# --- bad volumes and labels (3D segmentation sheet) ----------------------------------------------------------


def _wrong_shape(root: Path) -> tuple[str, str, Path]:
    image, _ = seg_case(root, "bad")
    _, mask = volume((12, 11, 5))
    return (
        str(image),
        str(write_nifti(MedImage(mask, AFFINE), root / "labels" / "bad.nii.gz")),
        root / "labels" / "bad.nii.gz",
    )


def _wrong_geometry(root: Path) -> tuple[str, str, Path]:
    image, _ = seg_case(root, "bad")
    shifted = AFFINE.copy()
    shifted[:3, 3] += [5.0, 0.0, 0.0]
    _, mask = volume()
    label = write_nifti(MedImage(mask, shifted), root / "labels" / "bad.nii.gz")
    return str(image), str(label), label


def _values_outside(root: Path) -> tuple[str, str, Path]:
    image, label = seg_case(root, "bad")
    _, mask = volume()
    mask[0, 1, 1, 1] = 3
    write_nifti(MedImage(mask, AFFINE), label)
    return str(image), str(label), label


def _empty_label_file(root: Path) -> tuple[str, str, Path]:
    image, label = seg_case(root, "bad")
    label.write_bytes(b"")
    return str(image), str(label), label


def _no_label(root: Path) -> tuple[str, str, Path]:
    image, _ = seg_case(root, "bad")
    return str(image), "", image


def _missing_label_file(root: Path) -> tuple[str, str, Path]:
    image, _ = seg_case(root, "bad")
    return str(image), str(root / "labels" / "nowhere.nii.gz"), root / "labels" / "nowhere.nii.gz"


def _nan_volume(root: Path) -> tuple[str, str, Path]:
    _, label = seg_case(root, "bad")
    image, _ = volume()
    data = image.astype(np.float32)
    data[0, 2, 2, 2] = np.nan
    path = write_nifti(MedImage(data, AFFINE), root / "images" / "bad.nii.gz")
    return str(path), str(label), path


VOLUME_CASES = {
    "label of different shape": (
        _wrong_shape,
        "label shape [12, 11, 5] differs from image shape [12, 11, 6]",
    ),
    "label of different geometry": (_wrong_geometry, "label geometry (affine) differs from its image's"),
    "label values outside the classes": (
        _values_outside,
        "label values 3 are outside the declared classes 0..1",
    ),
    "empty label file": (_empty_label_file, "file is empty (0 bytes)"),
    "no label where one is required": (_no_label, "no label mask (segmentation needs one per case)"),
    "missing label file": (_missing_label_file, "no such file or folder"),
    "NaN voxels in a volume": (_nan_volume, "not finite (1 NaN, 0 infinite)"),
}


def _volume_sheet(
    root: Path, bad: Callable[[Path], tuple[str, str, Path]] | None = None, n_good: int = 5
) -> tuple[dict, Path | None]:
    rows = []
    for i in range(n_good):
        image, label = seg_case(root, f"ok{i}", seed=i)
        rows.append({"image": str(image), "label": str(label), "patient": f"pt{i}"})
    bad_path = None
    if bad is not None:
        image, label, bad_path = bad(root)
        rows.append({"image": image, "label": label, "patient": "ptbad"})
    return seg_task({"format": "csv", "path": str(write_csv(root / "cases.csv", rows))}), bad_path


@pytest.mark.parametrize("kind", list(VOLUME_CASES))
def test_bad_volume_or_label_is_listed_with_its_file_and_search_refuses(tmp_path: Path, kind: str) -> None:
    make, problem = VOLUME_CASES[kind]
    task_map, bad = _volume_sheet(tmp_path, make)
    assert bad is not None
    _assert_one_bad_case(config(task_map), tmp_path, bad, problem)


def _assert_one_bad_case(task, root: Path, bad: Path, problem: str) -> None:  # noqa: ANN001
    report = validate_dataset(task, SALT)
    assert len(report.bad) == 1, [b.line() for b in report.bad]
    entry = report.bad[0]
    assert entry.path == str(bad)
    assert problem in entry.problem
    assert "\n" not in entry.line() and entry.line().startswith(f"{bad}: ")
    assert not report.ok
    # The search refuses to start, with one line that names the file, and writes no data records.
    run_dir = RunDir(root / "run")
    with pytest.raises(DataError) as info:
        plan_data(task, run_dir, salt=SALT)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"1 bad case of {report.n_cases}; run `mednas validate TASK.yaml` to list them: first: {bad}: "
    )
    assert not run_dir.fingerprint.exists() and not run_dir.splits.exists()


# --- every bad case is listed, by the API and by the command -------------------------------------------------


@pytest.fixture
def three_bad(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A task file over 5 good volumes and 3 bad cases: a zero-byte image, label values 3, a label of another shape."""
    rows = []
    for i in range(5):
        image, label = seg_case(tmp_path, f"ok{i}", seed=i)
        rows.append({"image": str(image), "label": str(label), "patient": f"pt{i}"})
    empty, label = seg_case(tmp_path, "zero")
    empty.write_bytes(b"")
    rows.append({"image": str(empty), "label": str(label), "patient": "z"})
    image, outside, _ = _values_outside(tmp_path)
    rows.append({"image": image, "label": outside, "patient": "v"})
    (tmp_path / "s").mkdir()
    image, other, _ = _wrong_shape(tmp_path / "s")
    rows.append({"image": image, "label": other, "patient": "s"})
    task = seg_task({"format": "csv", "path": "cases.csv"})
    write_csv(tmp_path / "cases.csv", rows)
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task))
    return task_file, [empty, Path(outside), Path(other)]


def test_validate_lists_all_three_bad_cases(three_bad: tuple[Path, list[Path]]) -> None:
    from mednas.config import load_task

    task_file, bad = three_bad
    report = validate_dataset(load_task(task_file), SALT)
    assert sorted(b.path for b in report.bad) == sorted(str(p) for p in bad)
    problems = {b.path: b.problem for b in report.bad}
    assert problems[str(bad[0])] == "file is empty (0 bytes)"
    assert problems[str(bad[1])] == "label values 3 are outside the declared classes 0..1"
    assert problems[str(bad[2])] == "label shape [12, 11, 5] differs from image shape [12, 11, 6]"
    assert report.fingerprint is not None and report.fingerprint["summary"]["n_cases"] == 5


def test_validate_command_exits_3_listing_every_bad_case(
    three_bad: tuple[Path, list[Path]], capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    task_file, bad = three_bad
    assert main(["validate", str(task_file)]) == 3
    out, err = capsys.readouterr()
    listed = [line.strip() for line in out.splitlines() if line.startswith("  /")]
    assert len(listed) == 3
    for path in bad:
        assert sum(line.startswith(f"{path}: ") for line in listed) == 1
    assert "bad cases (3):" in out
    assert "fingerprint (5 good cases)" in out and "splits: policy " in out
    errors = [line for line in err.splitlines() if line.startswith("mednas: error:")]
    assert errors == [f"mednas: error: {task_file}: 3 bad cases of 8 (listed above)"]


@pytest.mark.slow  # a `mednas validate` process; the same listing is checked in-process just above
def test_validate_command_without_traceback_in_a_fresh_process(three_bad: tuple[Path, list[Path]]) -> None:
    task_file, _ = three_bad
    proc = subprocess.run(
        [sys.executable, "-m", "mednas", "validate", str(task_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mednas: error: ")
    assert proc.stdout.count("\n  /") == 3


def test_search_command_refuses_bad_data(
    three_bad: tuple[Path, list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_mednas_logger: None,
) -> None:
    task_file, bad = three_bad
    run_dir = tmp_path / "run"
    assert main(["search", str(task_file), "--run-dir", str(run_dir), "--quiet"]) == 3
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("mednas: error:")]
    assert len(line) == 1 and line[0].startswith(
        "mednas: error: 3 bad cases of 8; run `mednas validate TASK.yaml`"
    )
    assert any(str(p) in line[0] for p in bad)
    assert not (run_dir / "trials").exists() and not (run_dir / "fingerprint.json").exists()


def test_good_data_validates_and_counts_all_background_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    task_map, _ = _volume_sheet(
        tmp_path, lambda root: (*[str(p) for p in seg_case(root, "empty", lesion=False)], Path())
    )
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task_map))
    assert main(["validate", str(task_file)]) == 0
    out = capsys.readouterr().out
    assert "data: 6 cases, 6 patients, 0 bad" in out
    assert "1 of 6 label masks are all background" in out
    assert "5 case(s) with a finding, 1 all-background" in out
    assert "splits: policy random (random, patient-grouped, label-stratified): train" in out
    assert out.strip().endswith("ok: every case can be used")
    assert main(["validate", str(task_file), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["splits"]["train"]["cases"] >= 2
    assert set(report["splits"]) == {"train", "val", "test"}


def test_bad_task_key_is_a_one_line_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    task_map, _ = _volume_sheet(tmp_path, n_good=3)
    task_map["data"]["augment_copis"] = 2
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task_map))
    assert main(["validate", str(task_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mednas: error: {task_file}: data.augment_copis: unknown key (did you mean 'augment_copies'?)"
    ]


def test_layout_errors_stop_validation_with_one_line(tmp_path: Path) -> None:
    task = config(seg_task({"format": "csv", "path": str(tmp_path / "missing.csv")}))
    with pytest.raises(DataError, match=r"missing.csv: CSV file not found"):
        validate_dataset(task, SALT)
    with pytest.raises(DataError):
        load_dataset(task, SALT)
