"""The fingerprint: per-case geometry, intensities inside the foreground and modality; class balance and label
sanity; suggested shapes and normalisation; computed in the same pass as validation (each file read once)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mednas.data import plan_data, suggest_normalize, suggest_shapes, validate_dataset
from mednas.io import MedImage, write_nifti
from mednas.rundir import RunDir
from tests.data._builders import AFFINE, cls_task, config, png, seg_case, seg_task, write_csv


def _ct_sheet(root: Path, n: int = 6) -> dict:
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        image = np.full((1, 14, 12, 5), -1000, np.int16)  # air around a body of soft tissue
        image[0, 2:12, 2:10] = rng.normal(40, 10, size=(10, 8, 5)).round().astype(np.int16)
        mask = np.zeros((1, 14, 12, 5), np.uint8)
        if i % 3:
            mask[0, 4:7, 4:7, 1:3] = 1
            image[0, 4:7, 4:7, 1:3] = 120
        write_nifti(MedImage(image, AFFINE), root / f"ct{i}.nii.gz")
        write_nifti(MedImage(mask, AFFINE), root / f"ct{i}_mask.nii.gz")
        rows.append(
            {"image": f"ct{i}.nii.gz", "label": f"ct{i}_mask.nii.gz", "patient": f"p{i}", "modality": "CT"}
        )
    return seg_task({"format": "csv", "path": str(write_csv(root / "cases.csv", rows))})


def test_records_and_summary_of_a_ct_segmentation_set(tmp_path: Path) -> None:
    fp = validate_dataset(config(_ct_sheet(tmp_path)), "salt").fingerprint
    assert fp is not None
    record = fp["cases"][0]
    assert record["shape"] == [14, 12, 5] and record["spacing"] == [1.5, 1.5, 3.0]
    assert record["orientation"] == "RAS" and record["modality"] == "CT" and record["dtype"] == "int16"
    assert set(record["intensity"]) == {"min", "max", "p00_5", "p50", "p99_5", "mean", "std"}
    assert record["intensity"]["min"] == -1000
    assert (
        20 < record["intensity"]["p50"] < 60
    )  # the foreground (above the 5th percentile) is the body, not air
    assert record["case"].startswith("c-") and record["patient"].startswith("p-")
    assert not any(isinstance(v, str) and "/" in v for r in fp["cases"] for v in r.values())  # no paths
    s = fp["summary"]
    assert s["modality"] == "CT" and s["n_cases"] == 6 and s["n_patients"] == 6
    assert s["label_voxels"] == {"background": 6 * 14 * 12 * 5 - 4 * 18, "lesion": 4 * 18}
    assert s["cases_with_finding"] == 4
    assert s["label_sanity"]["all_background_cases"] == 2
    assert s["label_sanity"]["cases_per_class"] == {"background": 6, "lesion": 4}
    assert s["intensity_in_label"]["p50"] == 120
    sug = fp["suggestions"]
    assert sug["normalize"] == "ct" and "HU window" in sug["normalize_reason"]
    assert sug["ct_window"] == [120.0, 120.0]  # percentiles inside the lesions
    assert sug["full"] == [14, 12, 5] and sug["proxy"] == [14, 12, 5]  # never enlarged (issue 14)


def test_classification_class_balance(tmp_path: Path) -> None:
    rows = []
    for i in range(8):
        png(tmp_path / f"i{i}.png", seed=i)
        rows.append({"image": f"i{i}.png", "label": int(i < 2), "patient": f"p{i}"})
    task = config(cls_task({"format": "csv", "path": str(write_csv(tmp_path / "c.csv", rows))}))
    s = validate_dataset(task, "salt").fingerprint["summary"]
    assert s["class_counts"] == {"normal": 6, "nodule": 2}
    assert s["class_fraction"] == {"normal": 0.75, "nodule": 0.25}
    assert s["label_sanity"] == {"unlabelled_cases": 0}


@pytest.mark.parametrize(
    ("modality", "minimum", "expected"),
    [
        ("CT", 0.0, "ct"),
        (None, -1024.0, "ct"),
        ("MR", 0.0, "zscore"),
        ("MRI", -5.0, "zscore"),
        (None, 0.0, "percentile"),
        ("CR", 0.0, "percentile"),
    ],
)
def test_suggested_normalisation(modality: str | None, minimum: float, expected: str) -> None:
    assert suggest_normalize(modality, minimum) == expected


def test_suggested_shapes_stay_affordable() -> None:
    # Small volumes: the median shape itself (never enlarged, not rounded), proxy half of it rounded to 8.
    assert suggest_shapes([90, 108, 90], 3, [2.0, 2.0, 2.0]) == {"full": [90, 108, 90], "proxy": [48, 56, 48]}
    # A 512 x 512 x 48 CT at 0.57 x 0.57 x 5 mm: shrunk towards isotropic voxels, slices never multiplied.
    big = suggest_shapes([512, 512, 48], 3, [0.57, 0.57, 5.0])
    assert big["full"][2] == 48 and big["full"][0] == big["full"][1] and np.prod(big["full"]) <= 1.1 * 128**3
    assert big["proxy"] == [max(16, int(round(s / 2 / 8)) * 8) for s in big["full"]]
    assert np.prod(suggest_shapes([2000, 2500], 2)["full"]) <= 1.1 * 256**2


def test_validation_and_fingerprint_read_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = []
    for i in range(6):
        image, label = seg_case(tmp_path, f"v{i}", seed=i)
        rows.append({"image": str(image), "label": str(label), "patient": f"p{i}"})
    task = config(seg_task({"format": "csv", "path": str(write_csv(tmp_path / "c.csv", rows))}))
    import mednas.io

    reads: Counter[str] = Counter()
    real = mednas.io.read_image

    def counting(path, **kw):  # noqa: ANN001, ANN003, ANN202
        reads[str(path)] += 1
        return real(path, **kw)

    monkeypatch.setattr(mednas.io, "read_image", counting)
    run_dir = RunDir(tmp_path / "run")
    plan = plan_data(task, run_dir, salt="salt")
    assert len(reads) == 12 and set(reads.values()) == {1}, reads
    fp = json.loads(run_dir.fingerprint.read_text())
    assert fp == plan.fingerprint and len(fp["cases"]) == 6
    # Resuming re-uses fingerprint.json: nothing is read again.
    reads.clear()
    plan_data(task, run_dir, salt="salt")
    assert not reads
