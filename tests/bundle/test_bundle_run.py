"""The bundle's own MONAI workflow: ``python -m monai.bundle run`` gives what ``mednas predict`` gives (slow)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

import mednas

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # `monai.bundle run` may take up to 600 s


def _run_bundle(bundle: Path, inputs: Path, out: Path) -> None:
    pytest.importorskip("ignite", reason="the bundle's evaluator needs pytorch-ignite")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--input_dir",
            str(inputs),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_monai_bundle_run_classification(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for png in sorted((cls_bundle.run.datalist.parent / "images").glob("*.png"))[:4]:
        shutil.copy(png, inputs / png.name)
    _run_bundle(cls_bundle.path, inputs, tmp_path / "eval")
    rows = list(csv.reader((tmp_path / "eval" / "predictions.csv").open()))
    model = mednas.load(cls_bundle.path)
    assert len(rows) == 4
    for row in rows:
        ours = model(row[0])
        np.testing.assert_allclose([float(v) for v in row[1:3]], list(ours.probabilities.values()), atol=1e-6)
        assert float(row[3]) == pytest.approx(ours.finding_score, abs=1e-6)
        assert bool(float(row[4])) == ours.decision


def test_monai_bundle_run_segmentation(seg_bundle: SimpleNamespace, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for entry in sorted((seg_bundle.run.datalist.parent / "images").glob("*.nii.gz"))[:2]:
        shutil.copy(entry, inputs / entry.name)
    _run_bundle(seg_bundle.path, inputs, tmp_path / "eval")
    model = mednas.load(seg_bundle.path)
    for image in sorted(inputs.iterdir()):
        saved = nib.load(tmp_path / "eval" / image.name.replace(".nii.gz", "_seg.nii.gz"))
        ours = model(image)
        np.testing.assert_array_equal(np.asarray(saved.dataobj), ours.mask.array[0])
        np.testing.assert_allclose(saved.affine, nib.load(image).affine, atol=1e-5)
