"""Splits: grouped by patient, stratified by label, seeded, saved and re-used on resume, k-fold; and a check that
proves no patient is in two splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mednas.config import SplitConfig
from mednas.data import Case, check_splits, load_dataset, make_splits, plan_data
from mednas.errors import DataError
from mednas.rundir import RunDir
from tests.data._builders import config, seg_case, seg_task, write_csv

SPLITS = ("train", "val", "test")


def _cases(n_patients: int = 30, per_patient: int = 3) -> list[Case]:
    """Patients with 1..per_patient images; a third of the patients have the finding (label 1) on every image."""
    cases = []
    for p in range(n_patients):
        for k in range(1 + p % per_patient):
            cases.append(
                Case(
                    key=f"c-{p:03d}{k}",
                    patient=f"p-{p:03d}",
                    images=(f"/x/{p}_{k}.png",),
                    label=int(p % 3 == 0),
                )
            )
    return cases


def _patients(splits: dict, cases: list[Case]) -> dict[str, set[str]]:
    by_key = {c.key: c for c in cases}
    return {s: {by_key[k].patient for k in splits[s]} for s in SPLITS}


def test_no_patient_in_two_splits_and_every_case_placed() -> None:
    cases = _cases()
    splits = make_splits(cases, SplitConfig(val=0.2, test=0.2), seed=0)
    check_splits(splits, cases)
    patients = _patients(splits, cases)
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    assert sorted(k for s in SPLITS for k in splits[s]) == sorted(c.key for c in cases)
    assert splits["n_patients"] == {s: len(patients[s]) for s in SPLITS}
    assert splits["method"] == "random, patient-grouped, label-stratified" and splits["policy"] == "random"


def test_stratified_by_label() -> None:
    cases = _cases(60)
    splits = make_splits(cases, SplitConfig(val=0.2, test=0.2), seed=3)
    strata = {c.patient: c.label for c in cases}
    for split in SPLITS:
        patients = _patients(splits, cases)[split]
        share = sum(strata[p] for p in patients) / len(patients)
        assert abs(share - 1 / 3) < 0.06, (split, share)


def test_seeded_same_seed_same_split_other_seed_other_split() -> None:
    cases = _cases()
    cfg = SplitConfig()
    assert make_splits(cases, cfg, seed=1) == make_splits(list(reversed(cases)), cfg, seed=1)
    assert make_splits(cases, cfg, seed=1)["hash"] != make_splits(cases, cfg, seed=2)["hash"]


def test_k_fold_validation_folds_partition_the_non_test_patients() -> None:
    cases = _cases(40)
    folds = [make_splits(cases, SplitConfig(test=0.2, folds=4, fold=f), seed=0) for f in range(4)]
    tests = {frozenset(_patients(s, cases)["test"]) for s in folds}
    assert len(tests) == 1  # the held-out test set does not move with the fold
    vals = [_patients(s, cases)["val"] for s in folds]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not vals[i] & vals[j]
    test = next(iter(tests))
    assert set().union(*vals) == {c.patient for c in cases} - test
    for s in folds:
        check_splits(s, cases)
        assert "4-fold" in s["method"]


def test_check_rejects_a_patient_in_two_splits_or_a_lost_case() -> None:
    cases = _cases()
    splits = make_splits(cases, SplitConfig(), seed=0)
    by_key = {c.key: c for c in cases}
    # Move one image of a multi-image patient into another split.
    key = next(k for k in splits["train"] if sum(c.patient == by_key[k].patient for c in cases) > 1)
    tampered = {**splits, "train": [k for k in splits["train"] if k != key], "val": [*splits["val"], key]}
    with pytest.raises(DataError, match=r"splits.json: patient p-\d+ is in both train and val"):
        check_splits(tampered, cases)
    lost = {**splits, "test": splits["test"][1:]}
    with pytest.raises(DataError, match=r"does not place 1 case"):
        check_splits(lost, cases)


def test_too_few_patients_is_a_data_error() -> None:
    cases = _cases(2)
    with pytest.raises(DataError, match=r"need at least 3 patients"):
        make_splits(cases, SplitConfig(), seed=0)


def _sheet(root: Path, n: int = 8) -> dict:
    """``n`` volumes, two per patient; patients 0, 3, 6, ... have no lesion in either volume."""
    rows = []
    for i in range(n):
        image, label = seg_case(root, f"v{i}", seed=i, lesion=(i // 2) % 3 != 0)
        rows.append({"image": str(image), "label": str(label), "patient": f"pt{i // 2}"})
    return seg_task({"format": "csv", "path": str(write_csv(root / "cases.csv", rows))})


def test_splits_saved_and_reused_on_resume(tmp_path: Path) -> None:
    task = config(_sheet(tmp_path, 12))
    run_dir = RunDir(tmp_path / "run")
    first = plan_data(task, run_dir, salt="s1")
    saved = json.loads(run_dir.splits.read_text())
    assert first.splits == saved
    # Resume with another search seed: the saved split is what the run keeps.
    resumed = plan_data(config(_sheet(tmp_path, 12), "search.seed=7"), run_dir, salt="s1")
    assert resumed.splits == saved
    assert make_splits(resumed.dataset.cases, task.data.split, seed=7)["hash"] != saved["hash"]  # not re-made
    assert json.loads(run_dir.splits.read_text()) == saved
    patients = {s: {c.patient for c in first.cases(s)} for s in SPLITS}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_splits_stratify_by_lesion_presence(tmp_path: Path, seed: int) -> None:
    sheet = _sheet(tmp_path, 18)
    sheet["data"]["split"] = {"val": 0.25, "test": 0.25}
    task = config(sheet, f"search.seed={seed}")
    plan = plan_data(task, RunDir(tmp_path / "run"), salt="s")
    presence = {c.key: c.extra["has_finding"] for c in plan.dataset.cases}
    assert Counter(presence.values()) == {1: 12, 0: 6}  # read from the masks, not stated by the sheet
    # 3 of 9 patients have no lesion: stratification puts one in each split, whatever the seed.
    without = {s: sum(1 for k in plan.splits[s] if presence[k] == 0) for s in SPLITS}
    assert without == {"train": 2, "val": 2, "test": 2}
    assert len(load_dataset(task, "s").cases) == 18
