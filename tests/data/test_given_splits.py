"""Given splits (issue 14): the source's own train/val/test are kept by default, exact duplicates across splits are
counted (train/test refused unless allowed), families that cannot run at the task's shapes are refused, and
``mednas splits --reveal`` maps a run's hashed split back to the original files so a baseline can reuse it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mednas.cli import main
from mednas.config import load_task, task_to_dict
from mednas.data import (
    load_dataset,
    plan_data,
    read_or_create_salt,
    read_revealed,
    reveal_splits,
    suggest_shapes,
    unsupported_families,
    validate_dataset,
)
from mednas.errors import ConfigError, DataError
from mednas.io._atomic import write_yaml
from mednas.rundir import RunDir
from tests.data._builders import cls_task, config, png, write_csv

SALT = "test-salt"


def _npz(
    path: Path, sizes: dict[str, int], *, size: int = 28, duplicate: tuple[str, str] | None = None
) -> Path:
    """A MedMNIST-style file with distinct random images per split; ``duplicate`` copies one image across splits."""
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, size, size)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    if duplicate:
        src, dst = duplicate
        arrays[f"{dst}_images"][0] = arrays[f"{src}_images"][1]
    np.savez(path, **arrays)
    return path


def _medmnist_task(npz: Path, **data: object) -> dict:
    return cls_task(
        {"format": "medmnist", "path": str(npz), **data},
        proxy={"shape": [16, 16], "epochs": 1},
        training={"shape": [28, 28], "batch_size": 8, "epochs": 1, "augment": False},
    )


# --- MedMNIST arrays are kept ----------------------------------------------------------------------------------


def test_medmnist_arrays_are_the_splits_and_validate_prints_policy_counts_duplicates(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    npz = _npz(
        tmp_path / "pneumoniamnist.npz", {"train": 14, "val": 5, "test": 6}, duplicate=("train", "val")
    )
    task_map = _medmnist_task(npz)
    rd = RunDir(tmp_path / "run")
    plan = plan_data(config(task_map), rd, salt=SALT)
    saved = json.loads(rd.splits.read_text())
    assert {s: len(saved[s]) for s in ("train", "val", "test")} == {"train": 14, "val": 5, "test": 6}
    assert saved["policy"] == "given" and saved["given"] == {"train": 14, "val": 5, "test": 6}
    assert saved["duplicates"]["across"] == {"train/val": 1, "train/test": 0, "val/test": 0}
    # Every case sits in the split of the array it came from, and splits.json holds only hashed keys.
    for split in ("train", "val", "test"):
        assert {c.given_split for c in plan.cases(split)} == {split}
    text = rd.splits.read_text()
    assert "pneumoniamnist" not in text and "train[" not in text
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task_map))
    assert main(["validate", str(task_file)]) == 0
    out = capsys.readouterr().out
    assert "splits: policy given (given by the source, patient-grouped): train 14 cases" in out
    assert "val 5 cases" in out and "test 6 cases" in out
    assert "exact duplicates: across splits train/val 1, train/test 0, val/test 0" in out


def test_random_policy_pools_and_resplits(tmp_path: Path, cache_dir: Path) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 14, "val": 5, "test": 6})
    report = validate_dataset(config(_medmnist_task(npz, split="random")), SALT)
    assert report.ok and report.split_policy == "random" and report.split_method.startswith("random")
    assert sum(v["cases"] for v in report.splits.values()) == 25
    assert report.splits["train"]["cases"] != 14  # the default fractions (0.6 / 0.2 / 0.2), not the arrays


def test_given_without_val_carves_val_out_of_train_and_without_test_has_no_test(
    tmp_path: Path, cache_dir: Path
) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 20, "test": 6})
    report = validate_dataset(config(_medmnist_task(npz)), SALT)
    assert report.ok and report.split_policy == "given"
    assert report.splits["test"]["cases"] == 6
    assert (
        report.splits["train"]["cases"] + report.splits["val"]["cases"] == 20
        and report.splits["val"]["cases"] == 4
    )
    assert any("carved out of the given training split" in n for n in report.notes)
    npz = _npz(tmp_path / "n.npz", {"train": 10, "val": 4})
    rd = RunDir(tmp_path / "run")
    plan = plan_data(config(_medmnist_task(npz)), rd, salt=SALT)
    assert [len(plan.splits[s]) for s in ("train", "val", "test")] == [10, 4, 0]
    assert any("no test split" in n for n in plan.splits["notes"])


def test_policy_given_requires_splits_from_the_source(tmp_path: Path, cache_dir: Path) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 12})
    assert validate_dataset(config(_medmnist_task(npz)), SALT).split_policy == "random"  # auto: nothing given
    report = validate_dataset(config(_medmnist_task(npz, split={"policy": "given"})), SALT)
    assert not report.ok and "defines no splits" in str(report.split_error)


# --- duplicates ------------------------------------------------------------------------------------------------


def test_train_test_duplicates_refused_unless_allowed(tmp_path: Path, cache_dir: Path) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 12, "val": 4, "test": 4}, duplicate=("train", "test"))
    task = config(_medmnist_task(npz))
    report = validate_dataset(task, SALT)
    assert not report.ok and report.duplicates["across"]["train/test"] == 1
    assert "1 image of the test split also occurs in train" in report.error_line()
    assert "data.allow_test_duplicates: true" in report.error_line()
    with pytest.raises(
        DataError, match=r"1 image of the test split also occurs in train .*allow_test_duplicates"
    ):
        plan_data(task, RunDir(tmp_path / "run"), salt=SALT)
    allowed = config(_medmnist_task(npz, allow_test_duplicates=True))
    assert validate_dataset(allowed, SALT).ok
    plan = plan_data(allowed, RunDir(tmp_path / "run2"), salt=SALT)
    assert plan.splits["duplicates"]["across"]["train/test"] == 1


# --- CSV sheets and datalists ----------------------------------------------------------------------------------


def _sheet(tmp_path: Path, splits: list[str], *, patients: list[str] | None = None) -> Path:
    rows = []
    for i, split in enumerate(splits):
        image = png(tmp_path / "img" / f"case{i:02d}.png", seed=i, size=16)
        rows.append(
            {
                "image": str(image.relative_to(tmp_path)),
                "label": i % 2,
                "split": split,
                "patient": (patients or [f"P{i}" for i in range(len(splits))])[i],
            }
        )
    return write_csv(tmp_path / "sheet.csv", rows)


def test_csv_split_column_is_kept(tmp_path: Path) -> None:
    sheet = _sheet(tmp_path, ["train"] * 8 + ["validation"] * 3 + ["test"] * 3)
    plan = plan_data(
        config(cls_task({"format": "csv", "path": str(sheet)})), RunDir(tmp_path / "run"), salt=SALT
    )
    assert plan.splits["policy"] == "given"
    assert {s: sorted(c.identifier for c in plan.cases(s)) for s in ("val", "test")} == {
        "val": [f"img/case{i:02d}.png" for i in (8, 9, 10)],
        "test": [f"img/case{i:02d}.png" for i in (11, 12, 13)],
    }
    assert "split" not in plan.cases("train")[0].extra


@pytest.mark.parametrize(
    ("splits", "patients", "pattern"),
    [
        (["train", "val", "bogus", "test"], None, r"sheet.csv: row 4: 'split' 'bogus' is not a split"),
        (["train", "val", "", "test"], None, r"1 of 4 cases have no given split"),
        (
            ["train", "val", "train", "test"],
            ["A", "B", "B", "C"],
            r"has cases in both the given (train and val|val and train) splits",
        ),
    ],
)
def test_csv_bad_given_splits_are_one_line_errors(
    tmp_path: Path, splits: list[str], patients: list[str] | None, pattern: str
) -> None:
    sheet = _sheet(tmp_path, splits, patients=patients)
    task = config(cls_task({"format": "csv", "path": str(sheet)}))
    with pytest.raises(DataError, match=pattern):
        plan_data(task, RunDir(tmp_path / "run"), salt=SALT)


def test_datalist_sections_are_splits(tmp_path: Path) -> None:
    entries = [{"image": str(png(tmp_path / f"{i}.png", seed=i)), "label": i % 2} for i in range(12)]
    path = tmp_path / "datalist.json"
    path.write_text(
        json.dumps({"training": entries[:8], "validation": entries[8:10], "testing": entries[10:]})
    )
    dataset = load_dataset(config(cls_task({"format": "datalist", "path": str(path)})), SALT)
    assert sorted(c.given_split for c in dataset.cases) == ["test"] * 2 + ["train"] * 8 + ["val"] * 2
    path.write_text(json.dumps({"training": entries}))
    assert (
        validate_dataset(config(cls_task({"format": "datalist", "path": str(path)})), SALT).split_policy
        == "random"
    )
    # Auto3DSeg-style fold fields: fold data.split.fold is validation, the other folds train.
    folded = [{**e, "fold": i % 3} for i, e in enumerate(entries)]
    path.write_text(json.dumps({"training": folded[:9], "testing": folded[9:]}))
    plan = plan_data(
        config(cls_task({"format": "datalist", "path": str(path)}), "data.split.fold=1"),
        RunDir(tmp_path / "run"),
        salt=SALT,
    )
    assert plan.splits["policy"] == "given"
    assert sorted(int(c.identifier.removesuffix(".png")) for c in plan.cases("val")) == [1, 4, 7]
    assert sorted(int(c.identifier.removesuffix(".png")) for c in plan.cases("test")) == [9, 10, 11]


# --- families that cannot run, shapes that never grow ----------------------------------------------------------


def test_densenet_on_a_28px_task_is_refused_by_validate_in_one_line(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 8, "val": 4})
    task_map = cls_task(
        {"format": "medmnist", "path": str(npz)},
        proxy={"shape": [16, 16], "epochs": 1},
        training={"batch_size": 8},
    )
    task_map["search"] = {**task_map["search"], "spaces": ["resnet", "densenet"], "space_options": {}}
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task_map))
    assert main(["validate", str(task_file)]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mednas: error:")]
    assert len(err) == 1
    assert (
        "search space 'densenet' cannot run at the proxy shape [16, 16]: it needs at least 29 pixels"
        in err[0]
    )
    assert "drop the family from search.spaces or change the shape" in err[0]
    # search refuses it the same way, before caching or training anything
    task = config(task_map)
    with pytest.raises(ConfigError, match=r"densenet' cannot run at the proxy shape"):
        plan_data(task, RunDir(tmp_path / "run"), salt=SALT)
    # the fix works: at 32 px (proxy and full) DenseNet is accepted
    larger = config(task_map, "proxy.shape=[32,32]", "training.shape=[32,32]")
    assert validate_dataset(larger, SALT).family_errors == []


@pytest.mark.parametrize(
    "median", [[28, 28], [90, 108, 90], [14, 12, 5], [300, 250], [512, 512, 48], [2000, 2500]]
)
def test_suggested_full_shape_never_enlarges_an_axis(median: list[int]) -> None:
    dims = len(median)
    sug = suggest_shapes(median, dims, [0.57, 0.57, 5.0][:dims])
    assert all(f <= m for f, m in zip(sug["full"], median))
    assert all(p <= f for p, f in zip(sug["proxy"], sug["full"]))
    assert suggest_shapes([28, 28], 2)["full"] == [28, 28]


# --- mednas splits --reveal ------------------------------------------------------------------------------------


def _planned_run(tmp_path: Path, task_map: dict, name: str = "run", salt: str | None = None) -> RunDir:
    task = config(task_map)
    rd = RunDir(tmp_path / name)
    rd.root.mkdir(parents=True)
    write_yaml(rd.resolved_path, task_to_dict(task))
    plan_data(task, rd, salt=read_or_create_salt(rd, shared=salt))
    return rd


def test_reveal_round_trips_the_runs_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    # A random split (nothing given): the run names cases by salted hashes only.
    data = tmp_path / "data"
    rows = [
        {
            "image": str(png(data / "img" / f"pat{i:02d}.png", seed=i, size=16).relative_to(data)),
            "label": i % 2,
        }
        for i in range(15)
    ]
    sheet = write_csv(data / "sheet.csv", rows)
    rd = _planned_run(tmp_path, cls_task({"format": "csv", "path": str(sheet)}))
    out = tmp_path / "private" / "splits.csv"
    assert main(["splits", str(rd.root), "--reveal", "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "may identify patients" in line]
    assert len(warnings) == 1
    revealed = read_revealed(out)
    assert sorted(revealed) == sorted(r["image"] for r in rows)  # paths relative to the data root
    assert (
        ".png" not in rd.splits.read_text() and "pat0" not in rd.splits.read_text()
    )  # the record stays hashed
    # A baseline on the revealed split: the sheet gets a split column, read with given splits in a new run with
    # another salt; every image lands in the split the first run gave it.
    for row in rows:
        row["split"] = revealed[row["image"]]
    sheet2 = write_csv(data / "sheet-with-splits.csv", rows)
    rd2 = _planned_run(tmp_path, cls_task({"format": "csv", "path": str(sheet2)}), "run2", salt="other-salt")
    first, second = (json.loads(r.splits.read_text()) for r in (rd, rd2))
    assert second["policy"] == "given"
    ids = {
        r: {
            c.key: c.identifier
            for c in load_dataset(config(cls_task({"format": "csv", "path": str(s)})), salt).cases
        }
        for r, s, salt in ((1, sheet, rd.salt.read_text()), (2, sheet2, "other-salt"))
    }
    for split in ("train", "val", "test"):
        assert sorted(ids[1][k] for k in first[split]) == sorted(ids[2][k] for k in second[split]), split
    # JSON output has the same content.
    reveal_splits(rd.root, tmp_path / "private" / "splits.json", reveal=True)
    assert read_revealed(tmp_path / "private" / "splits.json") == revealed
    with open(out) as fh:
        assert next(csv.reader(fh)) == ["identifier", "split", "case"]


def test_reveal_is_opt_in_and_stays_outside_the_run_and_bundles(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    npz = _npz(tmp_path / "m.npz", {"train": 8, "val": 4})
    rd = _planned_run(tmp_path, _medmnist_task(npz))
    assert main(["splits", str(rd.root), "--out", str(tmp_path / "s.csv")]) != 0
    assert "only with --reveal" in capsys.readouterr().err
    assert main(["splits", str(rd.root), "--reveal", "--out", str(rd.root / "s.csv")]) != 0
    assert "inside the run directory" in capsys.readouterr().err
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{}")
    assert main(["splits", str(rd.root), "--reveal", "--out", str(bundle / "docs" / "s.csv")]) != 0
    assert "inside the bundle" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(rd.root)  # a link into the run directory is still inside it
    assert main(["splits", str(rd.root), "--reveal", "--out", str(tmp_path / "link" / "s.csv")]) != 0
    assert "inside the run directory" in capsys.readouterr().err
    assert main(["splits", str(rd.root), "--reveal", "--out", str(tmp_path / "s.txt")]) != 0
    assert "must end in .csv or .json" in capsys.readouterr().err
    assert main(["splits", str(tmp_path / "nothing"), "--reveal", "--out", str(tmp_path / "s.csv")]) != 0
    assert "no resolved.yaml" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists() and not (rd.root / "s.csv").exists()
    reveal_splits(rd.root, tmp_path / "s.csv", reveal=True)
    assert sorted(set(read_revealed(tmp_path / "s.csv").values())) == ["train", "val"]
    assert "m.npz:val[3]" in read_revealed(tmp_path / "s.csv")


# --- the real task ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # writes and reads 5,214 images (about 10 s on 2 cores)
def test_real_pneumoniamnist_task_keeps_the_official_splits(
    monkeypatch: pytest.MonkeyPatch,
    cache_dir: Path,
    capsys: pytest.CaptureFixture[str],
    restore_mednas_logger: None,
) -> None:
    from tests._shared_data import shared_data_dir, shared_file

    shared_file("pneumoniamnist", "pneumoniamnist-dev.npz")
    monkeypatch.setenv("MEDNAS_SHARED_DATA", str(shared_data_dir()))
    task_file = Path(__file__).resolve().parents[2] / "tasks" / "real-pneumoniamnist.yaml"
    assert main(["validate", str(task_file)]) == 0
    out = capsys.readouterr().out
    assert "splits: policy given" in out
    assert "train 4690 cases" in out and "val 524 cases" in out and "test 0 cases" in out
    assert "exact duplicates: across splits train/val 8, train/test 0, val/test 0" in out
    assert "no test split" in out and "shapes used: full 28 x 28" in out
    with_densenet = load_task(task_file, overrides=["search.spaces=[resnet,densenet]"])
    assert unsupported_families(with_densenet, (28, 28), (28, 28)) == [
        "search space 'densenet' cannot run at the proxy shape [28, 28]: it needs at least 29 pixels per axis; drop "
        "the family from search.spaces or change the shape (proxy.shape)"
    ]


def test_decathlon_labelled_test_list_is_the_given_test_split(tmp_path: Path) -> None:
    from tests.data._builders import seg_task
    from tests.data.test_layouts import _msd_v1

    root = _msd_v1(tmp_path / "Task02_Heart", n=6)
    meta = json.loads((root / "dataset.json").read_text())
    meta["test"] = ["./imagesTs/la_009.nii.gz"]  # the MSD form: bare paths, labels withheld: not used
    (root / "dataset.json").write_text(json.dumps(meta))
    task = config(seg_task({"format": "decathlon", "path": str(root)}))
    assert {c.given_split for c in load_dataset(task, SALT).cases} == {None}
    meta["test"] = meta["training"][4:]  # labelled test cases (imagesTs + labelsTs)
    meta["training"] = meta["training"][:4]
    (root / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(task, SALT)
    assert sorted(c.given_split for c in dataset.cases) == ["test"] * 2 + ["train"] * 4
