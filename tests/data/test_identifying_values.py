"""No identifying value leaves: DICOM series carrying patient names, IDs, birth dates, accession numbers,
institution and physician names go through validate and a full tiny search; every file written (run directory
and cache), every log record and everything printed is searched for those values."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from mednas import api
from mednas.cli import main
from mednas.io import MedImage, read_image, write_nifti
from mednas.testing import FAKE_IDENTIFYING, write_dicom_series
from tests.data._builders import seg_task

# Patients 0..5; patients 1 and 4 have two series each (grouped by their hashed PatientID).
SERIES_PATIENTS = [0, 1, 1, 2, 3, 4, 4, 5]


def _identifying(patient: int) -> dict[str, str]:
    return dict(
        FAKE_IDENTIFYING,
        PatientID=f"{FAKE_IDENTIFYING['PatientID']}-{patient}",
        PatientName=f"{FAKE_IDENTIFYING['PatientName']}{patient}",
    )


def _forbidden() -> set[str]:
    values = set(FAKE_IDENTIFYING.values())
    for p in set(SERIES_PATIENTS):
        values.update(_identifying(p).values())
    # Parts of person names too (DICOM PN: FAMILY^GIVEN), where long enough not to occur by chance.
    for value in list(values):
        values.update(part for part in value.replace("^", " ").split() if len(part) >= 4)
    return values


def _dicom_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for i, patient in enumerate(SERIES_PATIENTS):
        image = rng.normal(40, 15, size=(1, 20, 18, 8)).round().astype(np.int16)
        center = rng.integers(5, 13, size=3)
        box = (0, slice(center[0] - 3, center[0] + 3), slice(center[1] - 3, center[1] + 3), slice(2, 6))
        image[box] += 300
        affine = np.diag([1.2, 1.2, 2.5, 1.0])
        folder = root / f"series{i}"
        write_dicom_series(
            MedImage(image, affine),
            folder,
            modality="CT",
            identifying=_identifying(patient),
            series_number=i + 1,
            series_description="AX",
            shuffle_names=True,
            seed=i,
        )
        read = read_image(folder)  # the mask goes on the grid mednas reads the series on
        write_nifti(MedImage((read.array > 200).astype(np.uint8), read.affine), root / f"mask{i}.nii.gz")
        entries.append({"image": f"series{i}", "label": f"mask{i}.nii.gz"})
    (root / "datalist.json").write_text(json.dumps({"description": "DICOM CT", "training": entries}))
    return root / "datalist.json"


def _scan(root: Path, forbidden: set[str]) -> list[str]:
    hits = []
    lowered = {v: v.lower().encode() for v in forbidden}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes().lower()
        for value, needle in lowered.items():
            if needle in data:
                hits.append(f"{path.relative_to(root)}: {value!r}")
    return hits


def test_no_identifying_value_in_any_output_of_a_full_search(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], restore_mednas_logger: None
) -> None:
    datalist = _dicom_dataset(tmp_path / "dicom")
    task = seg_task({"format": "datalist", "path": str(datalist)}, name="phi-check")
    task["data"]["split"] = {"val": 0.25, "test": 0.25}
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task))
    forbidden = _forbidden()
    # The values are really in the input files (else this test could not fail).
    assert any(b"PID-12345-4" in p.read_bytes() for p in (tmp_path / "dicom" / "series6").iterdir())

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("mednas")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert main(["validate", str(task_file)]) == 0
        assert main(["inspect", str(tmp_path / "dicom" / "series0")]) == 0
        assert main(["inspect", str(tmp_path / "dicom" / "series0"), "--json"]) == 0
        logging.getLogger("mednas").addHandler(handler)  # main() replaced the handlers
        logging.getLogger("mednas").setLevel(logging.DEBUG)
        run_dir = tmp_path / "run"
        result = api.search(str(task_file), run_dir=run_dir, n_trials=2, show_progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    out, err = capsys.readouterr()
    assert result.summary["n_trials"]["complete"] + result.summary["n_trials"]["pruned"] >= 1
    assert "ok: every case can be used" in out

    # Patients were grouped by PatientID (8 series, 6 patients) and no patient spans two splits.
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert fp["summary"]["n_patients"] == 6 and fp["summary"]["n_cases"] == 8
    patient_of = {r["case"]: r["patient"] for r in fp["cases"]}
    splits = json.loads((run_dir / "splits.json").read_text())
    owners = {}
    for split in ("train", "val", "test"):
        for key in splits[split]:
            assert owners.setdefault(patient_of[key], split) == split

    run_files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(run_files) >= 8 and any(p.name == "study.db" for p in run_files)
    assert list(cache_dir.rglob("*.npy")), "the proxy cache was written and is searched too"
    hits = _scan(run_dir, forbidden) + _scan(cache_dir, forbidden)
    text = {"stdout": out, "stderr": err, "logs": log.getvalue()}
    assert log.getvalue().strip(), "the logs were captured"
    for name, value in text.items():
        hits += [f"{name}: {v!r}" for v in forbidden if v.lower() in value.lower()]
    assert not hits, hits
