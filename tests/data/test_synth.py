"""Derived data: augmented copies made once into the cache (content-hash keyed, atomic, deterministic per seed),
binarised masks from ``label_threshold``, coarser grids from ``augment_spacing``, and honest grouping."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mednas.data import load_dataset, plan_data
from mednas.errors import ConfigError
from mednas.io import MedImage, read_image, write_nifti
from mednas.rundir import RunDir
from tests.data._builders import AFFINE, cls_task, config, png, seg_case, seg_task, volume, write_csv


def _sheet(root: Path, n: int = 3, **data: object) -> dict:
    rows = []
    for i in range(n):
        image, label = seg_case(root, f"v{i}", seed=i, shape=(20, 18, 8))
        rows.append({"image": str(image), "label": str(label), "patient": f"pt{i}", "modality": "MR"})
    return seg_task({"format": "csv", "path": str(write_csv(root / "cases.csv", rows)), **data})


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def test_copies_are_made_once_deterministic_and_marked(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = config(_sheet(tmp_path, augment_copies=2))
    dataset = load_dataset(task, "salt")
    assert len(dataset.cases) == 9
    folders = list((cache_dir / "synth").iterdir())
    assert len(folders) == 1 and (folders[0] / "manifest.json").is_file()
    assert all(Path(p).parent == folders[0] for c in dataset.cases for p in (*c.images, c.label))
    assert dataset.augmentation is not None and dataset.augmentation["copies_per_case"] == 2
    assert "not generalisation" not in dataset.augmentation["note"]  # grouped by patient: honest splits
    assert "copies stay with their source patient" in dataset.augmentation["note"]
    # Every copy keeps its source patient (augment_group: patient).
    assert len({c.patient for c in dataset.cases}) == 3
    # A copy differs from its original but keeps shape and geometry.
    by_copy = {(c.extra["source_case"], c.extra["copy"]): c for c in dataset.cases}
    source = next(iter({k[0] for k in by_copy}))
    original, copy = read_image(by_copy[source, 0].images[0]), read_image(by_copy[source, 1].images[0])
    assert original.spatial_shape == copy.spatial_shape == (20, 18, 8)
    np.testing.assert_allclose(original.affine, copy.affine)
    assert not np.array_equal(original.array, copy.array)
    mask = read_image(by_copy[source, 1].label).array
    assert set(np.unique(mask).tolist()) <= {0, 1} and mask.sum() > 0

    stamp = (folders[0] / "manifest.json").stat().st_mtime_ns
    first = _digests(folders[0])
    load_dataset(task, "other salt")  # cached: not rebuilt
    assert (folders[0] / "manifest.json").stat().st_mtime_ns == stamp
    # Another machine (another cache) with the same seed makes the same bytes.
    monkeypatch.setenv("MEDNAS_CACHE_DIR", str(tmp_path / "cache2"))
    load_dataset(task, "salt")
    again = list((tmp_path / "cache2" / "synth").iterdir())
    assert [f.name for f in again] == [folders[0].name] and _digests(again[0]) == first
    # Another data seed: another folder and other copies, same originals.
    other = list(load_dataset(config(_sheet(tmp_path, augment_copies=2, seed=5)), "salt").cases)
    assert len(list((tmp_path / "cache2" / "synth").iterdir())) == 2
    other_digests = _digests(Path(other[0].images[0]).parent)
    changed = [n for n in first if "copy000" not in n and first[n] != other_digests[n]]
    assert changed and all(first[n] == other_digests[n] for n in first if "copy000" in n)
    assert not [p for p in (tmp_path / "cache2" / "synth").iterdir() if p.name.startswith(".")]


def test_copy_grouping_makes_each_copy_a_split_unit(tmp_path: Path, cache_dir: Path) -> None:
    task = config(_sheet(tmp_path, n=1, augment_copies=4, augment_group="copy"))
    run_dir = RunDir(tmp_path / "run")
    plan = plan_data(task, run_dir, salt="salt")
    assert len({c.patient for c in plan.dataset.cases}) == 5
    assert all(plan.splits[s] for s in ("train", "val", "test"))
    note = plan.fingerprint["augmentation"]["note"]
    assert "robustness to augmentation, not generalisation to new subjects" in note
    assert plan.fingerprint["augmentation"]["group"] == "copy"


def test_label_threshold_binarises_and_spacing_coarsens(tmp_path: Path, cache_dir: Path) -> None:
    image, _ = volume((24, 20, 6), seed=0)
    skull_stripped = np.where(np.arange(24)[None, :, None, None] < 12, image, 0).astype(np.int16)
    write_nifti(MedImage(image, AFFINE), tmp_path / "t1.nii.gz")
    write_nifti(MedImage(skull_stripped, AFFINE), tmp_path / "t1_bet.nii.gz")
    write_csv(tmp_path / "one.csv", [{"image": "t1.nii.gz", "label": "t1_bet.nii.gz", "patient": "x"}])
    task = config(
        seg_task(
            {"format": "csv", "path": str(tmp_path / "one.csv"), "label_threshold": 0, "augment_spacing": 3.0}
        )
    )
    dataset = load_dataset(task, "salt")
    assert len(dataset.cases) == 1 and dataset.augmentation is None
    case = dataset.cases[0]
    out, mask = read_image(case.images[0]), read_image(case.label)
    assert out.spatial_shape == (12, 10, 6)  # 1.5 mm -> 3 mm in-plane; the 3 mm axis is kept
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array).tolist()) == {0, 1}
    assert mask.array[0, :6].all() and not mask.array[0, 6:].any()
    # Same world extent: first and last voxel edges where they were.
    old_first_edge = AFFINE @ np.array([-0.5, -0.5, -0.5, 1])
    new_first_edge = out.affine @ np.array([-0.5, -0.5, -0.5, 1])
    np.testing.assert_allclose(new_first_edge, old_first_edge, atol=1e-6)
    assert out.spacing == pytest.approx((3.0, 3.0, 3.0))


def test_two_dimensional_copies_and_classification_labels(tmp_path: Path, cache_dir: Path) -> None:
    rows = []
    for i in range(3):
        png(tmp_path / f"x{i}.png", seed=i, size=24, bright=bool(i % 2))
        rows.append({"image": f"x{i}.png", "label": i % 2, "patient": f"p{i}"})
    task = config(
        cls_task({"format": "csv", "path": str(write_csv(tmp_path / "c.csv", rows)), "augment_copies": 2})
    )
    dataset = load_dataset(task, "salt")
    assert len(dataset.cases) == 9
    assert sorted(c.label for c in dataset.cases) == [0] * 6 + [1] * 3
    assert {read_image(c.images[0]).spatial_shape for c in dataset.cases} == {(24, 24)}


def test_threshold_needs_a_segmentation_task(tmp_path: Path, cache_dir: Path) -> None:
    png(tmp_path / "a.png")
    task = config(
        cls_task(
            {
                "format": "csv",
                "path": str(write_csv(tmp_path / "c.csv", [{"image": "a.png", "label": 0}])),
                "label_threshold": 0,
            }
        )
    )
    with pytest.raises(ConfigError, match="data.label_threshold applies to segmentation tasks only"):
        load_dataset(task, "salt")


def test_bad_source_leaves_nothing_half_written(tmp_path: Path, cache_dir: Path) -> None:
    sheet = _sheet(tmp_path, n=3, augment_copies=2)
    (tmp_path / "labels" / "v1.nii.gz").write_bytes(b"")
    from mednas.errors import DataError

    with pytest.raises(DataError) as info:
        load_dataset(config(sheet), "salt")
    message = str(info.value)
    assert message.startswith("1 source case(s) for the derived data cannot be read: first: ")
    assert f"{tmp_path / 'labels' / 'v1.nii.gz'}: file is empty (0 bytes)" in message and "\n" not in message
    assert not list((cache_dir / "synth").iterdir())  # the temporary folder was removed
