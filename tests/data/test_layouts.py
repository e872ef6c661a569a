"""Every dataset layout lists the right cases, labels and patients: Decathlon v1 / nnU-Net v2, CSV, class folders,
MedMNIST .npz, MONAI datalists with ``${VAR}`` paths, and DICOM series grouped by their (hashed) PatientID."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mednas.data import load_dataset, validate_dataset
from mednas.errors import DataError
from mednas.io import MedImage, read_image, write_nifti
from mednas.testing import FAKE_IDENTIFYING, write_dicom_series
from tests.data._builders import AFFINE, cls_task, config, png, seg_case, seg_task, volume, write_csv

SALT = "test-salt"


# --- Decathlon / nnU-Net ------------------------------------------------------------------------------------


def _msd_v1(root: Path, n: int = 4) -> Path:
    training = []
    for i in range(n):
        seg_case(root, f"la_{i:03d}", seed=i)
        (root / "imagesTr").mkdir(exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        (root / "images" / f"la_{i:03d}.nii.gz").rename(root / "imagesTr" / f"la_{i:03d}.nii.gz")
        (root / "labels" / f"la_{i:03d}.nii.gz").rename(root / "labelsTr" / f"la_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/la_{i:03d}.nii.gz", "label": f"./labelsTr/la_{i:03d}.nii.gz"})
    meta = {
        "name": "Task02_Heart",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "left atrium"},
        "numTraining": n,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_decathlon_msd_v1_lists_images_and_masks(tmp_path: Path) -> None:
    root = _msd_v1(tmp_path / "Task02_Heart")
    task = config(seg_task({"format": "decathlon", "path": str(root)}))
    dataset = load_dataset(task, SALT)
    assert len(dataset.cases) == 4
    assert dataset.modality == "MR"
    for case in dataset.cases:
        assert Path(case.images[0]).is_file() and Path(case.images[0]).parent.name == "imagesTr"
        assert isinstance(case.label, str) and Path(case.label).is_file()
        assert Path(case.label).name == Path(case.images[0]).name
    assert len({c.patient for c in dataset.cases}) == 4  # no patient field: one patient per case
    assert validate_dataset(task, SALT).ok


def test_decathlon_nnunet_v2_channels_in_order(tmp_path: Path) -> None:
    root = tmp_path / "Dataset004_Prostate"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(3):
        image, mask = volume(seed=i)
        write_nifti(MedImage(image, AFFINE), root / "imagesTr" / f"prostate_{i:02d}_0000.nii.gz")
        write_nifti(MedImage(image // 2, AFFINE), root / "imagesTr" / f"prostate_{i:02d}_0001.nii.gz")
        write_nifti(MedImage(mask, AFFINE), root / "labelsTr" / f"prostate_{i:02d}.nii.gz")
    meta = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    task = config(seg_task({"format": "decathlon", "path": str(root / "dataset.json")}, in_channels=2))
    dataset = load_dataset(task, SALT)
    assert dataset.modality == "MR"
    assert len(dataset.cases) == 3
    for case in dataset.cases:
        assert [Path(p).name[-12:] for p in case.images] == ["_0000.nii.gz", "_0001.nii.gz"]
    report = validate_dataset(task, SALT)
    assert not report.bad and report.fingerprint["cases"][0]["channels"] == 2

    one_channel = config(seg_task({"format": "decathlon", "path": str(root)}))
    with pytest.raises(
        DataError, match=r"dataset.json: 2 channels \(channel_names\) but the task has in_channels=1"
    ):
        load_dataset(one_channel, SALT)


def test_decathlon_class_count_must_match_the_task(tmp_path: Path) -> None:
    root = _msd_v1(tmp_path / "Task")
    task = config(seg_task({"format": "decathlon", "path": str(root)}, names=("background", "a", "b")))
    with pytest.raises(DataError) as info:
        load_dataset(task, SALT)
    assert str(info.value).startswith(f"{root / 'dataset.json'}: declares classes [0, 1]")


def test_decathlon_without_dataset_json_names_the_file(tmp_path: Path) -> None:
    task = config(seg_task({"format": "decathlon", "path": str(tmp_path)}))
    with pytest.raises(DataError, match=r"dataset.json: dataset.json not found"):
        load_dataset(task, SALT)


# --- CSV ---------------------------------------------------------------------------------------------------


def test_csv_class_names_or_indices_relative_paths_extra_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "pngs"
    rows = []
    for i in range(6):
        png(images / f"img{i}.png", seed=i, bright=i % 2 == 1)
        label = ("normal", "nodule")[i % 2] if i < 3 else str(i % 2)
        rows.append(
            {
                "image": f"pngs/img{i}.png",
                "label": label,
                "patient": f"pt{i // 2}",
                "site": "A",
                "age": 50 + i,
            }
        )
    monkeypatch.setenv("MEDNAS_TEST_IMAGES", str(images))
    rows[5]["image"] = "${MEDNAS_TEST_IMAGES}/img5.png"
    sheet = write_csv(tmp_path / "sheets" / ".." / "cases.csv", rows)
    task = config(cls_task({"format": "csv", "path": str(sheet)}))
    dataset = load_dataset(task, SALT)
    by_name = {Path(c.images[0]).name: c for c in dataset.cases}
    assert sorted(by_name) == [f"img{i}.png" for i in range(6)]
    assert [by_name[f"img{i}.png"].label for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert all(Path(c.images[0]).is_file() for c in dataset.cases)
    assert by_name["img5.png"].images[0] == str(images / "img5.png")
    assert by_name["img0.png"].patient == by_name["img1.png"].patient != by_name["img2.png"].patient
    assert by_name["img3.png"].extra["site"] == "A" and by_name["img3.png"].extra["age"] == "53"
    assert len({c.patient for c in dataset.cases}) == 3


def test_csv_segmentation_with_several_channels(tmp_path: Path) -> None:
    rows = []
    for i in range(3):
        image, label = seg_case(tmp_path, f"c{i}", seed=i)
        write_nifti(read_image(image), tmp_path / "images" / f"c{i}_b.nii.gz")
        rows.append({"image": f"images/c{i}.nii.gz;images/c{i}_b.nii.gz", "label": f"labels/c{i}.nii.gz"})
    sheet = write_csv(tmp_path / "cases.csv", rows)
    task = config(seg_task({"format": "csv", "path": str(sheet)}, in_channels=2))
    dataset = load_dataset(task, SALT)
    assert all(len(c.images) == 2 for c in dataset.cases)
    assert not validate_dataset(task, SALT).bad


def test_csv_missing_column_suggests_the_closest(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "cases.csv", [{"imgae": "a.png", "label": "normal"}])
    task = config(cls_task({"format": "csv", "path": str(sheet)}))
    with pytest.raises(DataError) as info:
        load_dataset(task, SALT)
    message = str(info.value)
    assert message.startswith(f"{sheet}: no column 'image'") and "did you mean 'imgae'" in message
    assert "\n" not in message


def test_csv_unknown_class_and_unset_variable_name_file_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png(tmp_path / "a.png")
    sheet = write_csv(
        tmp_path / "cases.csv", [{"image": "a.png", "label": "normal"}, {"image": "a.png", "label": "nodul"}]
    )
    task = config(cls_task({"format": "csv", "path": str(sheet)}))
    with pytest.raises(
        DataError, match=r"cases.csv: row 3: label 'nodul' is not a declared class \(did you mean 'nodule'"
    ):
        load_dataset(task, SALT)
    monkeypatch.delenv("MEDNAS_NOT_SET", raising=False)
    sheet = write_csv(tmp_path / "vars.csv", [{"image": "${MEDNAS_NOT_SET}/a.png", "label": "normal"}])
    task = config(cls_task({"format": "csv", "path": str(sheet)}))
    with pytest.raises(
        DataError, match=r"vars.csv: row 2: environment variable \$\{MEDNAS_NOT_SET\} is not set"
    ):
        load_dataset(task, SALT)


def test_task_path_expands_variables_relative_to_the_task_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    png(tmp_path / "data" / "a.png")
    png(tmp_path / "data" / "b.png", bright=True)
    write_csv(
        tmp_path / "data" / "cases.csv", [{"image": "a.png", "label": 0}, {"image": "b.png", "label": 1}]
    )
    monkeypatch.setenv("MEDNAS_TEST_DATA", str(tmp_path / "data"))
    (tmp_path / "tasks").mkdir()
    task_file = tmp_path / "tasks" / "t.yaml"
    task_file.write_text(
        yaml.safe_dump(
            cls_task({"format": "csv", "path": "${MEDNAS_TEST_DATA}/cases.csv", "cache_dir": "../cache"})
        )
    )
    from mednas.config import load_task

    task = load_task(task_file)
    assert task.data.path == str(tmp_path / "data" / "cases.csv")
    assert task.data.cache_dir == str(tmp_path / "cache")
    assert len(load_dataset(task, SALT).cases) == 2


# --- class folders ------------------------------------------------------------------------------------------


def test_folders_one_folder_per_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "xrays"
    for i in range(3):
        png(root / "normal" / f"n{i}.png", seed=i)
        png(root / "nodule" / f"k{i}.png", seed=10 + i, bright=True)
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / "nodule" / ".DS_Store").write_bytes(b"\0")
    task = config(cls_task({"format": "folders", "path": str(root)}))
    with caplog.at_level(logging.INFO, logger="mednas"):
        dataset = load_dataset(task, SALT)
    labels = {Path(c.images[0]).name: c.label for c in dataset.cases}
    assert labels == {"n0.png": 0, "n1.png": 0, "n2.png": 0, "k0.png": 1, "k1.png": 1, "k2.png": 1}
    assert len({c.patient for c in dataset.cases}) == 6
    assert "each image is its own patient" in caplog.text
    assert "skipped 1 file that are not images" in caplog.text.replace("files", "file")
    assert "notes.txt" not in caplog.text  # file names can hold patient names: counts only


@pytest.mark.parametrize(
    ("folders", "pattern"),
    [
        (
            ["normal", "nodul"],
            r"xrays/nodul: folder name 'nodul' is not a class in labels.names \(did you mean 'nodule'",
        ),
        (["normal"], r"xrays: no folder for class 'nodule'"),
    ],
)
def test_folders_must_match_the_class_names(tmp_path: Path, folders: list[str], pattern: str) -> None:
    for name in folders:
        png(tmp_path / "xrays" / name / "a.png")
    task = config(cls_task({"format": "folders", "path": str(tmp_path / "xrays")}))
    with pytest.raises(DataError, match=pattern):
        load_dataset(task, SALT)


# --- MedMNIST -----------------------------------------------------------------------------------------------


def _npz(
    path: Path,
    shape: tuple[int, ...],
    n: tuple[int, int, int] = (6, 2, 2),
    *,
    classes: int = 2,
    **extra: np.ndarray,
) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(count, *shape)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def test_medmnist_2d_is_read_in_place_never_written_out(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    npz = _npz(tmp_path / "pneumoniamnist.npz", (28, 28))
    task = config(cls_task({"format": "medmnist", "path": str(npz)}))
    with caplog.at_level(logging.WARNING, logger="mednas"):
        dataset = load_dataset(task, SALT)
    assert "each image is treated as its own patient" in caplog.text
    assert len(dataset.cases) == 10 and len({c.patient for c in dataset.cases}) == 10
    assert not cache_dir.exists()  # no copy of the images anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pneumoniamnist.npz"]
    with np.load(npz) as z:
        original = z["val_images"][1]
    case = next(c for c in dataset.cases if c.identifier == "pneumoniamnist.npz:val[1]")
    assert case.images == (f"{npz.resolve()}:val[1]",) and case.given_split == "val"
    np.testing.assert_array_equal(read_image(case.images[0]).array[0].T, original)  # (X, Y) = (columns, rows)
    assert case.label == 1
    # The image reads as the same picture saved as a PNG would (dtype, axes, values): pixel hashes are unchanged.
    from PIL import Image

    Image.fromarray(original).save(tmp_path / "same.png")
    as_png = read_image(tmp_path / "same.png").array
    assert read_image(case.images[0]).array.dtype == as_png.dtype
    np.testing.assert_array_equal(read_image(case.images[0]).array, as_png)
    # Case keys depend on the file's content and the salt only; a changed file is read afresh.
    assert [c.key for c in load_dataset(task, SALT).cases] == [c.key for c in dataset.cases]
    _npz(npz, (28, 28), (4, 2, 2))
    assert len(load_dataset(task, SALT).cases) == 8
    assert not cache_dir.exists()
    assert validate_dataset(task, SALT).ok


def test_medmnist_references_name_the_problem(tmp_path: Path) -> None:
    npz = _npz(tmp_path / "m.npz", (8, 8))
    with pytest.raises(DataError, match=r"m.npz:val\[7\]: val_images has 2 images, no row 7"):
        read_image(f"{npz}:val[7]")
    with pytest.raises(DataError, match=r"gone.npz: file not found"):
        read_image(f"{tmp_path / 'gone.npz'}:train[0]")


def test_medmnist_3d_and_rgb(tmp_path: Path, cache_dir: Path) -> None:
    npz = _npz(tmp_path / "organmnist3d.npz", (8, 9, 10), classes=3)
    task = config(
        seg_task({"format": "medmnist", "path": str(npz)}, names=("a", "b", "c"))
        | {"problem": "classification", "objective": {"metric": "auroc"}, "search": {"spaces": ["resnet"]}}
    )
    dataset = load_dataset(task, SALT)
    case = next(c for c in dataset.cases if c.identifier == "organmnist3d.npz:train[2]")
    with np.load(npz) as z:
        original = z["train_images"][2]
    np.testing.assert_array_equal(np.transpose(read_image(case.images[0]).array[0], (2, 1, 0)), original)
    assert case.label == 2
    assert validate_dataset(task, SALT).ok

    rgb = _npz(tmp_path / "dermamnist.npz", (12, 12, 3))
    task = config(cls_task({"format": "medmnist", "path": str(rgb)}))
    image = read_image(load_dataset(task, SALT).cases[0].images[0])
    assert image.array.shape == (3, 12, 12)
    assert not cache_dir.exists()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"shape": (8, 8), "drop": "train_labels"},
            r"not a MedMNIST file: needs 'train_images' and 'train_labels'",
        ),
        (
            {"shape": (8, 8), "multilabel": True},
            r"train_labels has shape \(6, 14\): multi-label MedMNIST sets are not supported",
        ),
        ({"shape": (4, 8, 8, 8)}, r"train_images has shape \(6, 4, 8, 8, 8\); a 2D task needs"),
        ({"shape": (8, 8), "classes": 5}, r"train_labels\[2\] = 2 is outside the declared classes 0..1"),
    ],
)
def test_medmnist_bad_files_name_the_file(
    tmp_path: Path, cache_dir: Path, kwargs: dict, pattern: str
) -> None:
    npz = tmp_path / "bad.npz"
    _npz(npz, kwargs["shape"], classes=kwargs.get("classes", 2))
    if kwargs.get("drop") or kwargs.get("multilabel"):
        with np.load(npz) as z:
            arrays = dict(z)
        arrays.pop(kwargs.get("drop", ""), None)
        if kwargs.get("multilabel"):
            arrays["train_labels"] = np.zeros((6, 14), dtype=np.uint8)
        np.savez(npz, **arrays)
    task = config(cls_task({"format": "medmnist", "path": str(npz)}))
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(task, SALT)
    assert str(info.value).startswith(str(npz))


def test_medmnist_missing_or_corrupt_file(tmp_path: Path, cache_dir: Path) -> None:
    task = config(cls_task({"format": "medmnist", "path": str(tmp_path / "none.npz")}))
    with pytest.raises(DataError, match=r"none.npz: MedMNIST file not found"):
        load_dataset(task, SALT)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    task = config(cls_task({"format": "medmnist", "path": str(tmp_path / "broken.npz")}))
    with pytest.raises(DataError, match=r"broken.npz: cannot read the .npz archive"):
        load_dataset(task, SALT)


# --- datalists and DICOM patients ---------------------------------------------------------------------------


def test_datalist_paths_expand_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, label = seg_case(tmp_path / "vols", "a")
    seg_case(tmp_path / "vols", "b", seed=1)
    seg_case(tmp_path / "vols", "c", seed=2)
    monkeypatch.setenv("MEDNAS_TEST_VOLS", str(tmp_path / "vols"))
    entries = [
        {
            "image": f"${{MEDNAS_TEST_VOLS}}/images/{n}.nii.gz",
            "label": f"${{MEDNAS_TEST_VOLS}}/labels/{n}.nii.gz",
        }
        for n in "abc"
    ]
    (tmp_path / "list.json").write_text(json.dumps({"training": entries}))
    task = config(seg_task({"format": "datalist", "path": str(tmp_path / "list.json")}))
    dataset = load_dataset(task, SALT)
    assert sorted(c.images[0] for c in dataset.cases)[0] == str(image)
    assert any(c.label == str(label) for c in dataset.cases)


def _dicom_cases(root: Path, patients: list[str]) -> list[dict]:
    """One DICOM series folder per entry of ``patients`` (a patient may have several), NIfTI masks beside."""
    entries = []
    for i, pid in enumerate(patients):
        image, mask = volume((10, 9, 4), seed=i)
        folder = root / f"series{i}"
        identifying = dict(FAKE_IDENTIFYING, PatientID=pid)
        write_dicom_series(
            MedImage(image, AFFINE),
            folder,
            modality="MR",
            identifying=identifying,
            series_number=i + 1,
            seed=i,
        )
        read = read_image(folder)
        label = (read.array > 400).astype(np.uint8)
        write_nifti(MedImage(label, read.affine), root / f"mask{i}.nii.gz")
        entries.append({"image": f"series{i}", "label": f"mask{i}.nii.gz"})
    return entries


def test_dicom_series_grouped_by_hashed_patient_id(tmp_path: Path) -> None:
    entries = _dicom_cases(tmp_path, ["PID-A", "PID-B", "PID-A", "PID-C"])
    (tmp_path / "list.json").write_text(json.dumps({"training": entries}))
    task = config(seg_task({"format": "datalist", "path": str(tmp_path / "list.json")}))
    dataset = load_dataset(task, SALT)
    patient = {Path(c.images[0]).name: c.patient for c in dataset.cases}
    assert patient["series0"] == patient["series2"]
    assert len(set(patient.values())) == 3
    assert all(p.startswith("p-") and len(p) == 14 for p in patient.values())
    assert "PID-" not in repr(dataset)  # raw IDs are hashed at once and kept nowhere
    report = validate_dataset(task, SALT)
    assert not report.bad, [b.line() for b in report.bad]
    assert report.fingerprint["summary"]["modality"] == "MR"

    ungrouped = config(
        seg_task({"format": "datalist", "path": str(tmp_path / "list.json"), "dicom_patient_id": False})
    )
    assert len({c.patient for c in load_dataset(ungrouped, SALT).cases}) == 4


def test_patient_field_wins_over_dicom_patient_id(tmp_path: Path) -> None:
    entries = _dicom_cases(tmp_path, ["PID-A", "PID-B", "PID-C"])
    for e in entries:
        e["patient"] = "same"
    (tmp_path / "list.json").write_text(json.dumps({"training": entries}))
    task = config(seg_task({"format": "datalist", "path": str(tmp_path / "list.json")}))
    assert len({c.patient for c in load_dataset(task, SALT).cases}) == 1
