"""``mednas predict`` and ``mednas.load``: input grids kept, DICOM geometry, checksums, and agreement with MONAI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

import mednas
from mednas.cli import main
from mednas.io import MedImage, read_image, write_nifti


def _volume(seg_bundle: SimpleNamespace, tmp_path: Path, *, integer: bool = False) -> Path:
    """A case of the tiny dataset on an odd grid with a flipped, shifted affine (not the training shape)."""
    entry = json.loads(seg_bundle.run.datalist.read_text())["training"][0]
    img = read_image(seg_bundle.run.datalist.parent / entry["image"])
    array = img.array[:, 1:, :-2, 3:]  # 23 x 22 x 21
    if integer:
        array = np.round(array)  # DICOM stores integers: both inputs then hold the same values
    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.25, 0, -12.0], [0, 0, 2.0, 7.5], [0, 0, 0, 1]])
    return write_nifti(MedImage(array.astype(np.float32), affine), tmp_path / "scan.nii.gz")


def test_predict_nifti_mask_has_input_shape_and_affine(
    seg_bundle: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = _volume(seg_bundle, tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", str(seg_bundle.path), str(scan), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scan.nii.gz: mask 23x22x21" in printed
    src, mask = nib.load(scan), nib.load(out / "scan_seg.nii.gz")
    assert mask.shape == src.shape == (23, 22, 21)
    np.testing.assert_allclose(mask.affine, src.affine, atol=1e-6)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert rows[0]["case"] == str(scan) and rows[0]["mask"] == "scan_seg.nii.gz"
    assert int(rows[0]["voxels_lesion"]) == int((np.asarray(mask.dataobj) == 1).sum())


def test_predict_dicom_series_aligned_to_its_geometry(seg_bundle: SimpleNamespace, tmp_path: Path) -> None:
    from mednas.testing import write_dicom_series

    scan = _volume(seg_bundle, tmp_path, integer=True)
    series = tmp_path / "series"
    write_dicom_series(read_image(scan), series, modality="MR", shuffle_names=True)
    model = mednas.load(seg_bundle.path)
    by_nifti, by_dicom = model(scan), model(series)
    dicom_image = read_image(series)
    assert by_dicom.mask.spatial_shape == dicom_image.spatial_shape
    np.testing.assert_allclose(by_dicom.mask.affine, dicom_image.affine, atol=1e-4)
    # Every DICOM mask voxel, taken to world coordinates and back into the NIfTI grid, has the same label.
    idx = np.indices(by_dicom.mask.spatial_shape).reshape(3, -1)
    world = by_dicom.mask.affine @ np.vstack([idx, np.ones(idx.shape[1])])
    back = np.rint(np.linalg.inv(by_nifti.mask.affine) @ world)[:3].astype(int)
    assert np.all(back >= 0) and np.all(np.array(by_nifti.mask.spatial_shape) > back.T)
    np.testing.assert_array_equal(by_dicom.mask.array[0].reshape(-1), by_nifti.mask.array[0][tuple(back)])
    # The seeded tiny model marks a few lesion voxels on this case; an empty mask would make the check vacuous.
    assert by_dicom.mask.array.sum() > 0


def test_tampered_or_incomplete_bundle_is_refused(
    seg_bundle: SimpleNamespace,
    bundle_copy,
    tmp_path: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
) -> None:
    scan = _volume(seg_bundle, tmp_path)
    bundle = bundle_copy(seg_bundle.path)
    weights = bundle / "models" / "model.pt"
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01  # one byte
    weights.write_bytes(bytes(data))
    assert main(["predict", str(bundle), str(scan), "--out", str(tmp_path / "o1")]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pt: checksum mismatch" in err[0] and "refusing" in err[0], err
    assert not (tmp_path / "o1").exists()
    weights.write_bytes(original)
    script = bundle / "models" / "model.ts"
    script_bytes = script.read_bytes()
    script.unlink()
    assert main(["predict", str(bundle), str(scan), "--out", str(tmp_path / "o2")]) == 5
    assert "model.ts: listed in checksums.sha256 but missing" in capsys.readouterr().err
    script.write_bytes(script_bytes)
    assert mednas.load(bundle)(scan).mask is not None  # restored: accepted again
    (bundle / "models" / "extra.pt").write_bytes(original)
    with pytest.raises(mednas.MednasError, match="extra.pt: not listed in checksums.sha256"):
        mednas.load(bundle)
    (bundle / "checksums.sha256").unlink()
    with pytest.raises(mednas.MednasError, match="checksums.sha256: missing"):
        mednas.load(bundle)


def test_classification_predict_csv_and_api(
    cls_bundle: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted((cls_bundle.run.datalist.parent / "images").glob("*.png"))[:3]
    out = tmp_path / "pred"
    assert main(["predict", str(cls_bundle.path), *map(str, images), "--out", str(out)]) == 0
    assert "proxy candidate, not retrained" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["case"] for r in rows] == [str(p) for p in images]
    assert set(rows[0]) == {
        "case",
        "p_normal",
        "p_finding",
        "finding_score",
        "threshold",
        "decision",
        "label",
        "model",
    }
    model = mednas.load(cls_bundle.path)
    results = model([str(p) for p in images])
    threshold = model.pipeline.threshold
    for row, res in zip(rows, results):
        assert abs(sum(res.probabilities.values()) - 1) < 1e-5
        assert res.decision == (res.probabilities["finding"] >= threshold) == (row["decision"] == "1")
        assert res.label == ("finding" if res.decision else "normal") == row["label"]
        assert float(row["p_finding"]) == pytest.approx(res.probabilities["finding"], abs=1e-6)
    single = model(str(images[0]))
    assert single.label == results[0].label and single.mask is None and model.is_proxy
    for backend in ("onnx", "torchscript"):
        other = mednas.load(cls_bundle.path, backend=backend)(str(images[0]))
        assert other.probabilities["finding"] == pytest.approx(single.probabilities["finding"], abs=1e-5)


def test_wrong_dimensions_are_one_line_errors(
    seg_bundle: SimpleNamespace,
    cls_bundle: SimpleNamespace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = sorted((cls_bundle.run.datalist.parent / "images").glob("*.png"))[0]
    assert main(["predict", str(seg_bundle.path), str(png), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 spatial dimensions; this model takes 3D images" in err[0]


_NO_MEDNAS = textwrap.dedent("""
    import json, sys
    sys.modules["mednas"] = None  # any `import mednas` now raises ImportError
    import numpy as np, torch
    from monai.bundle import ConfigParser
    try:
        import mednas  # noqa
    except ImportError:
        pass
    else:
        raise SystemExit("mednas is importable")
    for bundle, image, out in json.loads(sys.argv[1]):
        parser = ConfigParser()
        parser.read_config(f"{bundle}/configs/inference.json")
        parser["bundle_root"] = bundle
        parser["output_dir"] = out
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(f"{bundle}/models/model.pt", weights_only=True))
        net.eval()
        data = parser.get_parsed_content("preprocessing")({"image": image})
        with torch.no_grad():
            data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
        data = parser.get_parsed_content("postprocessing")(data)
        np.save(f"{out}/pred.npy", np.asarray(data["pred"]))
        if "finding_score" in data:
            np.save(f"{out}/decision.npy", np.asarray(data["decision"]))
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] == "mednas")
    assert not loaded, loaded
""")


@pytest.mark.slow  # a fresh interpreter running MONAI alone (7 s)
def test_monai_alone_runs_the_bundle_like_mednas_predict(
    cls_bundle: SimpleNamespace, seg_bundle: SimpleNamespace, tmp_path: Path
) -> None:
    png = sorted((cls_bundle.run.datalist.parent / "images").glob("*.png"))[1]
    scan = _volume(seg_bundle, tmp_path)
    jobs = []
    for name, bundle, image in (("cls", cls_bundle.path, png), ("seg", seg_bundle.path, scan)):
        (tmp_path / name).mkdir()
        jobs.append([str(bundle), str(image), str(tmp_path / name)])
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", _NO_MEDNAS, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls = mednas.load(cls_bundle.path)(str(png))
    probs = np.load(tmp_path / "cls" / "pred.npy")
    np.testing.assert_allclose(probs, [cls.probabilities[n] for n in ("normal", "finding")], atol=1e-6)
    assert bool(np.load(tmp_path / "cls" / "decision.npy").reshape(-1)[0]) == cls.decision
    seg = mednas.load(seg_bundle.path)(str(scan))
    np.testing.assert_array_equal(np.load(tmp_path / "seg" / "pred.npy"), seg.mask.array)
    saved = nib.load(
        tmp_path / "seg" / "scan_seg.nii.gz"
    )  # MONAI's SaveImaged, from the bundle's postprocessing
    np.testing.assert_array_equal(np.asarray(saved.dataobj), seg.mask.array[0])
    np.testing.assert_allclose(saved.affine, seg.mask.affine, atol=1e-5)
