"""``mednas evaluate``: the promise check on a shifted site, overlap with training, segmentation, bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mednas
from mednas.cli import main
from mednas.evaluation import case_split, evaluate_bundle
from tests.evaluation.conftest import copy_images, write_eval_set

RESAMPLES = 200


def _finite_ci(m: dict) -> bool:
    lo, hi = m["ci95"]
    return (
        lo is not None
        and hi is not None
        and math.isfinite(lo)
        and math.isfinite(hi)
        and lo <= m["value"] <= hi
    )


def _error_lines(stderr: str) -> list[str]:
    """The ``mednas:`` lines of stderr (logged warnings, e.g. the proxy-candidate one, are not errors)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("mednas:")]


@pytest.fixture(scope="module")
def shifted_result(cls_bundle: SimpleNamespace, shifted_site: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval-shifted")
    return mednas.evaluate(cls_bundle.path, shifted_site, out=out, n_resamples=RESAMPLES)


def test_promise_fails_on_a_shifted_site(shifted_result, cls_bundle: SimpleNamespace) -> None:
    rec = shifted_result.record
    op = rec["operating_point"]
    meta = json.loads((cls_bundle.path / "configs" / "metadata.json").read_text())["mednas"][
        "operating_point"
    ]
    assert op["rule"] == meta["rule"] == "sensitivity_at_specificity>=0.8"
    assert op["threshold"] == pytest.approx(meta["threshold"])
    # 16 of the 20 normals carry the artefact the bundle reads as a finding: specificity collapses.
    spec = rec["metrics"]["specificity"]
    assert spec["value"] <= 0.5 and spec["ci95"][1] < 0.8
    assert op["status"] == "failed"
    assert op["text"].startswith("specificity >= 0.80 promised, ") and op["text"].endswith("achieved: failed")
    would = op["would_meet_here"]
    assert would["threshold"] != pytest.approx(op["threshold"])  # shown, never applied
    assert would["specificity"] >= 0.8
    # The applied threshold is the bundle's: the confusion counts are at it.
    (tn, fp), (fn, tp) = rec["finding_confusion"]["matrix"]
    assert tn + fp == 20 and fn + tp == 20 and tn / 20 == pytest.approx(spec["value"])


def test_every_figure_carries_an_interval_and_names_its_population(
    shifted_result, shifted_site: Path
) -> None:
    rec = json.loads(shifted_result.path.read_text())
    assert rec["population"] == f"{shifted_site.name}, no split filter: 40 cases, 40 patients"
    for name in (
        "auroc",
        "auprc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "accuracy",
        "balanced_accuracy",
        "ece",
        "brier",
    ):
        m = rec["metrics"][name]
        assert m["value"] is not None and len(m["ci95"]) == 2, name
    assert _finite_ci(rec["metrics"]["auroc"]) and _finite_ci(rec["metrics"]["accuracy"])
    assert [c["class"] for c in rec["per_class"]] == ["normal", "finding"]
    assert sum(map(sum, rec["confusion"]["matrix"])) == 40
    assert rec["calibration"]["bins"] and sum(b["n"] for b in rec["calibration"]["bins"]) == 40
    # Subgroups by the datalist's own columns (sex; site has one value and says nothing), with n and intervals.
    assert rec["subgroups"]["attributes"] == ["sex"]
    rows = {r["value"]: r for r in rec["subgroups"]["rows"]}
    assert rows["F"]["n"] == 20 and rows["M"]["n"] == 20
    assert _finite_ci(rows["F"]["metrics"]["accuracy"])
    html = shifted_result.html.read_text()
    assert "PROMISE FAILED" in html and html.count(rec["population"]) >= 4
    assert not re.search(r"""<script[^>]+src=""", html)  # self-contained: plotly.js is inline


def test_overlap_with_training_counts_the_images_put_in(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    from mednas.config import load_task, load_yaml
    from mednas.data import load_dataset
    from mednas.rundir import RunDir

    rd = RunDir(cls_bundle.run.run_dir)
    by_key = load_dataset(load_task(load_yaml(rd.resolved_path)), rd.salt.read_text().strip()).by_key()
    splits = json.loads(rd.splits.read_text())
    train, val = [by_key[k] for k in splits["train"][:3]], [by_key[k] for k in splits["val"][:2]]
    root = tmp_path / "mixed"
    fresh = [{"label": i % 2, "disc": bool(i % 2)} for i in range(5)]
    write_eval_set(root, fresh, seed=99)
    entries = json.loads((root / "datalist.json").read_text())["training"]
    for rel, case in zip(copy_images([c.images[0] for c in train + val], root, "seen"), train + val):
        entries.append({"image": rel, "label": case.label, "patient": rel})
    (root / "datalist.json").write_text(json.dumps({"training": entries}))
    rec = evaluate_bundle(
        cls_bundle.path, data_file=root / "datalist.json", out=tmp_path / "out", n_resamples=RESAMPLES
    ).record
    o = rec["overlap"]
    assert o["recorded"] and o["n_hashed"] == 10
    assert o["seen_in_training"] == 3 and o["seen_in_validation"] == 2
    assert o["text"].startswith("3 of 10 evaluation images were seen in training, 2 in validation")
    # Hashes only: nothing in the bundle names a case.
    hashes = (cls_bundle.path / "configs" / "data_hashes.json").read_text()
    assert "img_" not in hashes and ".png" not in hashes and "p-" not in hashes


def test_a_bundle_without_hashes_says_not_recorded(
    cls_bundle: SimpleNamespace, shifted_site: Path, bundle_copy, tmp_path: Path
) -> None:
    from mednas.bundle import write_checksums

    old = bundle_copy(cls_bundle.path)
    (old / "configs" / "data_hashes.json").unlink()
    write_checksums(old)
    rec = mednas.evaluate(old, shifted_site, out=tmp_path / "out", n_resamples=RESAMPLES).record
    assert rec["overlap"]["recorded"] is False and rec["overlap"]["seen_in_training"] is None
    assert rec["overlap"]["text"].startswith("not recorded")


def test_split_filter_and_task_like_yaml(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    items = [{"label": i % 2, "disc": bool(i % 2), "split": "test" if i < 12 else "train"} for i in range(20)]
    datalist = write_eval_set(tmp_path / "d", items)
    yaml_file = tmp_path / "d" / "external.yaml"
    yaml_file.write_text(
        "data:\n  format: datalist\n  path: datalist.json\nlabels:\n  names: [normal, finding]\n"
    )
    result = mednas.evaluate(
        cls_bundle.path, yaml_file, out=tmp_path / "out", split="test", n_resamples=RESAMPLES
    )
    rec = result.record
    assert rec["data"]["n_cases"] == 12 and rec["data"]["split"] == "test"
    assert rec["data"]["splits_present"] == {"test": 12, "train": 8}
    assert rec["population"] == "external.yaml, split test: 12 cases, 12 patients"
    assert case_split(SimpleNamespace(given_split=None, extra={"medmnist_split": "val"})) == "val"
    # Case and patient names are salted afresh each time; the intervals are the same all the same.
    again = mednas.evaluate(
        cls_bundle.path, yaml_file, out=tmp_path / "again", split="test", n_resamples=RESAMPLES
    )
    assert again.record["metrics"] == rec["metrics"] and again.record["subgroups"] == rec["subgroups"]
    assert datalist.is_file()


def test_a_nan_output_is_a_failed_case_never_a_label(
    cls_bundle: SimpleNamespace, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mednas.bundle._predict import BundleModel
    from mednas.io import MedImage, write_nifti

    root = tmp_path / "d"
    write_eval_set(root, [{"label": i % 2, "disc": bool(i % 2)} for i in range(10)])
    # One image that cannot be read (NaN pixels) and one whose network output is NaN.
    write_nifti(
        MedImage(np.full((1, 32, 32), np.nan, np.float32), np.eye(4)), root / "images" / "broken.nii.gz"
    )
    data = json.loads((root / "datalist.json").read_text())
    data["training"].append({"image": "images/broken.nii.gz", "label": 1, "patient": "broken"})
    (root / "datalist.json").write_text(json.dumps(data))
    run = BundleModel.run

    def nan_for_one_case(self: BundleModel, image: MedImage, *, where: str = "image") -> dict:
        if not where.endswith("eval_003.png"):
            return run(self, image, where=where)
        network = self._network
        self._network = lambda x: network(x) * float("nan")
        try:
            return run(self, image, where=where)
        finally:
            self._network = network

    monkeypatch.setattr(BundleModel, "run", nan_for_one_case)
    code = main(
        [
            "evaluate",
            str(cls_bundle.path),
            "--data",
            str(root / "datalist.json"),
            "--out",
            str(tmp_path / "o"),
            "--resamples",
            "100",
        ]
    )
    err = _error_lines(capsys.readouterr().err)
    assert code == 7 and len(err) == 1 and "2 of 11 cases failed" in err[0]
    rec = json.loads((tmp_path / "o" / "validation.json").read_text())
    assert rec["data"]["n_cases"] == 9 and rec["failed"]["n"] == 2
    assert rec["failed"]["reasons"] == {"non-finite model output": 1, "image could not be read or used": 1}
    assert sum(map(sum, rec["confusion"]["matrix"])) == 9  # no label for the failed cases
    failed = (tmp_path / "o" / "failed.csv").read_text()
    assert "broken.nii.gz" in failed and "eval_003.png" in failed


def test_nan_weights_fail_every_case_in_one_line(
    cls_bundle: SimpleNamespace, shifted_site: Path, bundle_copy, tmp_path: Path, capsys
) -> None:
    import torch

    from mednas.bundle import write_checksums

    broken = bundle_copy(cls_bundle.path)
    state = torch.load(broken / "models" / "model.pt", weights_only=True)
    torch.save(
        {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in state.items()},
        broken / "models" / "model.pt",
    )
    write_checksums(broken)
    code = main(["evaluate", str(broken), "--data", str(shifted_site), "--out", str(tmp_path / "o")])
    err = _error_lines(capsys.readouterr().err)
    assert (
        code == 3 and len(err) == 1 and "no case could be evaluated (40 failed" in err[0] and "NaN" in err[0]
    )
    assert not (tmp_path / "o" / "validation.json").exists()


def test_segmentation_bundle_gives_dice_with_an_interval(seg_bundle: SimpleNamespace, tmp_path: Path) -> None:
    from mednas.testing import tiny_segmentation_data

    datalist = tiny_segmentation_data(tmp_path / "site-b", n=6, seed=7)
    rec = mednas.evaluate(seg_bundle.path, datalist, out=tmp_path / "out", n_resamples=RESAMPLES).record
    assert rec["bundle"]["problem"] == "segmentation" and rec["data"]["n_cases"] == 6
    dice = rec["metrics"]["dice"]
    assert 0.0 <= dice["value"] <= 1.0 and _finite_ci(dice)
    assert "lesion_sensitivity" in rec["metrics"] and rec["per_class"][0]["class"] == "lesion"
    assert "operating_point" not in rec and rec["overlap"]["recorded"]


@pytest.mark.parametrize("case", ["missing", "split", "digest", "labels"])
def test_bad_input_is_one_line(
    case: str, cls_bundle: SimpleNamespace, shifted_site: Path, tmp_path: Path, capsys
) -> None:
    args = ["evaluate", str(cls_bundle.path), "--data", str(shifted_site), "--out", str(tmp_path / "o")]
    want = {
        "missing": (3, "data file not found"),
        "split": (3, "--split val selects no case"),
        "digest": (5, "digest"),
        "labels": (2, "differ from the bundle's classes"),
    }[case]
    if case == "missing":
        args[3] = str(tmp_path / "nowhere.csv")
    elif case == "split":
        args += ["--split", "validation"]
    elif case == "digest":
        args += ["--expect-digest", "0" * 64]
    else:
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            f"data:\n  format: datalist\n  path: {shifted_site}\nlabels:\n  names: [healthy, sick]\n"
        )
        args[2:4] = [str(bad)]
    code = main(args)
    err = _error_lines(capsys.readouterr().err)
    assert code == want[0], err
    assert len(err) == 1 and err[0].startswith("mednas: error: ") and want[1] in err[0], err
    assert not (tmp_path / "o" / "validation.json").exists()


def test_cli_prints_the_promise(
    cls_bundle: SimpleNamespace, shifted_site: Path, tmp_path: Path, capsys
) -> None:
    digest = cls_bundle.result.digest
    code = main(
        [
            "evaluate",
            str(cls_bundle.path),
            "--data",
            str(shifted_site),
            "--out",
            str(tmp_path / "o"),
            "--expect-digest",
            digest,
            "--resamples",
            "100",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "PROMISE FAILED" in out and "(pinned)" in out and "would pick threshold" in out
    assert (tmp_path / "o" / "validation.html").is_file()
    shutil.rmtree(tmp_path / "o")


def test_dicom_subgroups_name_sex_and_scanner_never_a_person(tmp_path: Path) -> None:
    from mednas.evaluation import subgroup_attributes
    from mednas.io import MedImage
    from mednas.testing import FAKE_IDENTIFYING, write_dicom_series

    cases = []
    for i in range(6):
        folder = tmp_path / f"series{i}"
        tags = {
            **FAKE_IDENTIFYING,
            "PatientSex": "F" if i % 2 else "M",
            "Manufacturer": "Acme" if i < 3 else "Initech",
        }
        write_dicom_series(MedImage(np.full((1, 8, 8, 3), 100.0), np.eye(4)), folder, identifying=tags)
        # Datalist fields: a column that names patients, one near-unique, one real site.
        extra = {
            "patient_name": f"DOE^{i}",
            "scan_date": "20240229",
            "ward": f"w{i}",
            "site": "A" if i < 4 else "B",
        }
        cases.append(SimpleNamespace(images=(str(folder),), extra=extra))
    rows = subgroup_attributes(cases)
    assert {k for r in rows for k in r} == {"PatientSex", "Manufacturer", "site"}
    assert rows[0] == {"PatientSex": "M", "Manufacturer": "Acme", "site": "A"}
    text = json.dumps(rows)
    assert not any(v in text for v in FAKE_IDENTIFYING.values())


def test_medmnist_file_and_its_test_arrays(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in (("train", 6), ("val", 4), ("test", 10)):
        images = rng.integers(40, 120, size=(n, 28, 28)).astype(np.uint8)
        labels = np.arange(n) % 2
        images[labels == 1, 10:16, 10:16] = 250
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    npz = tmp_path / "toymnist.npz"
    np.savez(npz, **arrays)
    rec = mednas.evaluate(
        cls_bundle.path, npz, out=tmp_path / "out", split="test", n_resamples=RESAMPLES
    ).record
    assert rec["data"]["layout"] == "medmnist" and rec["data"]["n_cases"] == 10
    assert rec["data"]["splits_present"] == {"test": 10, "train": 6, "val": 4}
    assert rec["data"]["class_counts"] == {"normal": 5, "finding": 5}
    assert rec["population"] == "toymnist.npz, split test: 10 cases, 10 patients"


def test_hashes_from_the_fingerprint_equal_hashes_of_the_images_read_again(
    cls_bundle: SimpleNamespace, tmp_path: Path
) -> None:
    from mednas.bundle._hashes import write_data_hashes
    from mednas.config import load_task, load_yaml
    from mednas.rundir import RunDir

    run = Path(
        shutil.copytree(cls_bundle.run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("bundle"))
    )
    rd = RunDir(run)
    task = load_task(load_yaml(rd.resolved_path))
    fast = write_data_hashes(tmp_path / "fast.json", rd, task)
    fp = json.loads(rd.fingerprint.read_text())
    for case in fp["cases"]:
        case.pop("pixels", None)  # a run from before the fingerprint recorded pixel hashes
    rd.fingerprint.write_text(json.dumps(fp))
    slow = write_data_hashes(tmp_path / "slow.json", rd, task)
    assert fast["source"] == "fingerprint.json" and slow["source"] == "images read again at export"
    assert (
        fast["train"] == slow["train"]
        and fast["val"] == slow["val"]
        and len(fast["train"]) == fast["n_train"]
    )
    shutil.rmtree(run / "trials", ignore_errors=True)
    (run / "splits.json").unlink()
    broken = write_data_hashes(tmp_path / "broken.json", rd, task)
    assert "not_recorded" in broken and "train" not in broken
