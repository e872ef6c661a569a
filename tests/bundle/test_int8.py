"""``mednas export --quantize int8``: the INT8 model, what it costs on validation, its refusal, and its backend.

One quantized export of the shared tiny classification run (module fixture) serves most tests; the refusal forces
a drop by replacing the float32/INT8 comparison with a fixed one, so it is deterministic.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import mednas
from mednas import api
from mednas.bundle import BundleError, verify_checksums
from mednas.cli import main
from tests._bundles import schema_path

INT8 = "models/model_int8.onnx"


def _meta(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


@pytest.fixture(scope="module")
def cls_int8(cls_run: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny classification run exported with an INT8 model (4 calibration images); calibration reads spied.

    Tolerance 1 accepts whatever the drop: on 5 validation cases (2 with the finding) one case crossing the
    locked threshold moves the objective by 0.5, which the refusal test covers on its own.
    """
    import mednas.data

    reads: list[list[str]] = []
    real = mednas.data.load_arrays

    def spy(cases, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads.append([c.key for c in cases])
        return real(cases, *args, **kwargs)

    out = tmp_path_factory.mktemp("int8") / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mednas.data, "load_arrays", spy)
        result = api.export(
            cls_run.run_dir,
            out,
            formats="onnx",
            schema=schema_path(),
            quantize="int8",
            calibration_images=4,
            int8_tolerance=1.0,
        )
    return SimpleNamespace(path=out, result=result, reads=reads, run=cls_run)


def test_int8_export_records_deltas_latency_and_size(cls_int8: SimpleNamespace) -> None:
    b = cls_int8
    rec = _meta(b.path)["mednas"]["int8"]
    assert (b.path / INT8).is_file() and rec["accepted"] is True and rec["file"] == INT8
    assert b.result.int8 == rec and INT8 in b.result.files
    assert rec["calibration"]["split"] == "train" and rec["calibration"]["n_images"] == 4
    assert rec["evaluated_on"]["split"] == "validation" and rec["evaluated_on"]["n_patients"] >= 2
    for name in ("auroc", "objective"):
        row = rec["metrics"][name]
        assert set(row) >= {"float32", "int8", "delta", "delta_ci95", "float32_ci95", "int8_ci95"}
        if row["delta"] is not None:
            assert row["delta"] == pytest.approx(row["int8"] - row["float32"], abs=1e-9)
            low, high = row["delta_ci95"]
            assert low <= high and len(row["delta_ci95"]) == 2
    assert rec["objective_drop"] == pytest.approx(-rec["metrics"]["objective"]["delta"], abs=1e-9)
    assert rec["tolerance"] == 1.0 and rec["bootstrap"]["paired"] is True
    lat, size = rec["latency"], rec["size"]
    assert (
        lat["threads"] == 1 and lat["float32"]["precision"] == "fp32" and lat["int8"]["precision"] == "int8"
    )
    assert lat["ratio"] == pytest.approx(lat["float32"]["median_ms"] / lat["int8"]["median_ms"], rel=1e-2)
    assert size["int8_bytes"] == (b.path / INT8).stat().st_size
    assert size["float32_bytes"] == (b.path / "models" / "model.onnx").stat().st_size
    # No size claim: a 4k-parameter network's quantize/dequantize nodes outweigh its 8-bit weights.
    assert size["ratio"] == pytest.approx(size["float32_bytes"] / size["int8_bytes"], abs=1e-3)
    card = (b.path / "docs" / "README.md").read_text()
    section = card.split("## INT8 model", 1)[1].split("\n## ", 1)[0]
    assert "validation split of the search's own data" in section and "not an external test" in section
    assert "| metric | float32 | INT8 | INT8 - float32 |" in section and "| objective |" in section
    assert lat["hardware"] in section and f"ratio {lat['ratio']:.2f}" in section
    assert f"ratio {size['ratio']:.2f}" in section and "--backend onnx-int8" in section
    listed = verify_checksums(b.path, required=(INT8,))
    assert INT8 in listed
    summary = json.loads((b.run.run_dir / "summary.json").read_text())
    assert summary["export"]["int8"]["accepted"] is True


def test_int8_calibration_reads_training_cases_only(cls_int8: SimpleNamespace) -> None:
    splits = json.loads((cls_int8.run.run_dir / "splits.json").read_text())
    assert len(cls_int8.reads) == 1, "calibration loads its images once, nothing else goes through the spy"
    (keys,) = cls_int8.reads
    assert len(keys) == 4 and set(keys) <= set(splits["train"])
    assert not set(keys) & (set(splits["val"]) | set(splits["test"]))


def test_int8_bundle_passes_monais_checks(cls_int8: SimpleNamespace) -> None:
    from mednas.bundle._verify import check_metadata, verify_net_in_out

    checks = cls_int8.result.checks
    assert "verify_net_in_out passed" in checks["net_in_out"]
    schema = schema_path()
    what = check_metadata(cls_int8.path / "configs" / "metadata.json", schema)
    assert what.startswith("MONAI schema" if schema else "required fields")
    verify_net_in_out(cls_int8.path)


def test_load_predict_and_evaluate_run_the_int8_model(
    cls_int8: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted((cls_int8.run.datalist.parent / "images").glob("*.png"))[:2]
    model = mednas.load(cls_int8.path, backend="onnx-int8", expect_digest=cls_int8.result.digest)
    assert model.backend == "onnx-int8"
    pred = model(str(images[0]))
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-5 and pred.label in ("normal", "finding")
    code = main(
        [
            "predict",
            str(cls_int8.path),
            *map(str, images),
            "--out",
            str(tmp_path / "p"),
            "--backend",
            "onnx-int8",
        ]
    )
    assert code == 0 and "onnx-int8" in capsys.readouterr().out
    assert (tmp_path / "p" / "predictions.csv").is_file()
    result = api.evaluate(
        cls_int8.path, cls_int8.run.datalist, out=tmp_path / "v", backend="onnx-int8", n_resamples=50
    )
    assert result.record["bundle"]["backend"] == "onnx-int8"


def test_int8_backend_missing_or_changed_is_refused(
    cls_int8: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = Path(shutil.copytree(cls_int8.path, tmp_path / "b"))
    data = bytearray((bundle / INT8).read_bytes())
    data[-1] ^= 0xFF
    (bundle / INT8).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model_int8.onnx: checksum mismatch"):
        mednas.load(bundle, backend="onnx-int8")
    with pytest.raises(BundleError, match="checksum mismatch"):
        mednas.load(bundle)  # the INT8 file is part of the bundle whichever backend runs
    shutil.rmtree(bundle)
    plain = Path(shutil.copytree(cls_int8.path, tmp_path / "plain"))
    (plain / INT8).unlink()
    lines = [ln for ln in (plain / "checksums.sha256").read_text().splitlines() if INT8 not in ln]
    (plain / "checksums.sha256").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        BundleError, match=r"model_int8.onnx: this bundle has no INT8 model; export one with "
    ):
        mednas.load(plain, backend="onnx-int8")
    assert main(["predict", str(plain), "x.png", "--out", str(tmp_path / "o"), "--backend", "onnx-int8"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quantize int8" in err[0], err


def test_int8_refused_beyond_tolerance(
    cls_run: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mednas.bundle._int8 as int8_mod

    def dropped(root, src, val):  # noqa: ANN001, ANN202
        assert (root / INT8).is_file()  # written, then measured
        row = {"float32_ci95": [0.7, 0.9], "int8_ci95": [0.5, 0.7], "delta_ci95": [-0.3, -0.1]}
        return {
            "auroc": {"float32": 0.9, "int8": 0.7, "delta": -0.2, **row, "n_resamples": 50},
            "objective": {"float32": 0.8, "int8": 0.6, "delta": -0.2, **row, "n_resamples": 50},
        }

    monkeypatch.setattr(int8_mod, "_compare", dropped)
    out = tmp_path / "bundle"
    code = main(
        ["export", str(cls_run.run_dir), "--out", str(out), "--format", "onnx", "--quantize", "int8",
         "--calibration-images", "2", "--int8-tolerance", "0.05"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "bundle digest" in captured.out  # the float32 bundle was exported and reported
    err = captured.err.strip().splitlines()
    expected = (
        "mednas export: INT8 model not written: the objective (sensitivity_at_specificity) drops by 0.2 on the "
        f"validation split ({{}} patients), more than the tolerance 0.05; the float32 bundle at {out} is complete"
    )
    rec = _meta(out)["mednas"]["int8"]
    assert err[-1] == expected.format(rec["evaluated_on"]["n_patients"]), err[-1]
    assert sum("INT8 model not written" in ln for ln in err) == 1
    assert not (out / INT8).exists() and rec["accepted"] is False and rec["file"] is None
    assert rec["objective_drop"] == pytest.approx(0.2) and "more than the tolerance 0.05" in rec["reason"]
    assert "No INT8 model in this bundle" in (out / "docs" / "README.md").read_text()
    assert INT8 not in verify_checksums(out, required=("models/model.onnx",))
    with pytest.raises(BundleError, match="no INT8 model"):
        mednas.load(out, backend="onnx-int8")
    assert mednas.load(out, backend="onnx").backend == "onnx"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "fp16"], "--quantize: 'fp16' is not supported; choose int8"),
        (["--quantize", "int8", "--format", "torchscript"], "--format torchscript leaves it out"),
        (
            ["--quantize", "int8", "--calibration-images", "0"],
            "--calibration-images: expected an integer >= 1",
        ),
        (
            ["--quantize", "int8", "--int8-tolerance", "1.5"],
            "--int8-tolerance: expected a number from 0 to 1",
        ),
        (
            ["--quantize", "int8", "--int8-tolerance", "nan"],
            "--int8-tolerance: expected a number from 0 to 1",
        ),
    ],
)
def test_bad_int8_flags_are_one_line_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b"
    code = main(["export", str(tmp_path / "no-run"), "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "--format" not in message or "--quantize" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_int8_segmentation_records_dice(seg_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = api.export(
        seg_run.run_dir, out, formats="onnx", quantize="int8", calibration_images=3, int8_tolerance=1.0
    )
    rec = result.int8
    assert rec is not None and rec["accepted"] and (out / INT8).is_file()
    assert set(rec["metrics"]) == {"dice", "objective"} and rec["threshold"] is None
    dice = rec["metrics"]["dice"]
    assert 0 <= dice["float32"] <= 1 and dice["delta"] == pytest.approx(dice["int8"] - dice["float32"])
    assert rec["latency"]["float32"]["shape"][1:] == list(result.metadata["mednas"]["pipeline"]["shape"])
    pred = mednas.load(out, backend="onnx-int8")
    assert pred.backend == "onnx-int8"


@pytest.mark.parametrize("ratio", [0.7, 2.5])
def test_the_card_says_when_the_int8_model_is_slower(cls_int8: SimpleNamespace, ratio: float) -> None:
    """Small networks run slower in INT8 (measured 0.4-0.9x for 10k-500k parameters): the card must say so."""
    import copy

    from mednas.bundle._model_card import SLOWER_NOTE, _int8

    rec = copy.deepcopy(cls_int8.result.int8)
    rec["latency"]["ratio"] = ratio
    text = "\n".join(_int8(rec))
    assert (SLOWER_NOTE in text) is (ratio < 1)
