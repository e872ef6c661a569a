"""``mednas export``: bundle layout, MONAI's verify commands, exported formats, atomicity, and what never leaks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mednas import api
from mednas.cli import main
from mednas.errors import MednasError

BUNDLE_FILES = {
    "configs/inference.json",
    "configs/metadata.json",
    "models/model.pt",
    "models/model.ts",
    "models/model.onnx",
    "docs/README.md",
    "search_record.json",
    "LICENSE",
    "checksums.sha256",
    "configs/data_hashes.json",
}


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _monai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, timeout=300
    )


def test_proxy_export_is_flagged_everywhere(cls_bundle: SimpleNamespace) -> None:
    bundle, run_dir = cls_bundle.path, cls_bundle.run.run_dir
    assert bundle == run_dir / "bundle"
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == BUNDLE_FILES
    meta = _meta(bundle)
    m = meta["mednas"]
    best = cls_bundle.run.summary["best"]["trial"]
    assert (m["source"], m["trial"], m["source_label"]) == ("proxy", best, "proxy candidate, not retrained")
    assert "NOT RETRAINED" in meta["description"] and "NOT RETRAINED" in meta["intended_use"]
    card = (bundle / "docs" / "README.md").read_text()
    assert "PROXY CANDIDATE, NOT RETRAINED" in card and "SIMULATED data" in card
    assert m["data"]["simulated"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["export"]["source"] == "proxy" and summary["export"]["trial"] == best
    assert summary["export"]["path"] == "bundle"
    # The proxy was trained at the proxy shape: the bundle resizes inputs to it, with the spec as trained.
    assert m["pipeline"]["shape"] == cls_bundle.run.summary["proxy"]["shape"]
    assert m["spec"] == json.loads((run_dir / "trials" / str(best) / "spec.json").read_text())
    assert set(m["metrics"]) == {"val"} and "ci95" in m["metrics"]["val"]["auroc"]
    # The proxy's threshold, re-chosen on the probabilities calibrated at export: for two classes, the same cut
    # through the same cases, moved by the temperature (p -> 1 / (1 + ((1 - p) / p) ** (1 / T))).
    p, t = cls_bundle.run.summary["best"]["operating_point"]["threshold"], m["pipeline"]["temperature"]
    assert m["operating_point"]["threshold"] == pytest.approx(1 / (1 + ((1 - p) / p) ** (1 / t)), rel=1e-4)


def test_retrained_export_records_both_splits(seg_bundle: SimpleNamespace) -> None:
    meta = _meta(seg_bundle.path)
    m = meta["mednas"]
    retrain = seg_bundle.run.summary["retrain"]
    assert (m["source"], m["trial"]) == ("retrained", retrain["best"])
    assert m["pipeline"]["shape"] == retrain["shape"] and m["pipeline"]["orientation"] == "RAS"
    record = json.loads((seg_bundle.run.run_dir / "retrain" / str(retrain["best"]) / "spec.json").read_text())
    assert m["spec"] == record
    for split in ("val", "test"):
        dice = m["metrics"][split]["dice"]
        assert dice["ci95"][0] <= dice["value"] <= dice["ci95"][1]
    assert m["proxy_fidelity"] == seg_bundle.run.summary["proxy_fidelity"]
    assert m["data"]["fingerprint_hash"] and m["data"]["split_hash"]
    assert m["versions"]["monai"] and m["versions"]["torch"]
    assert "NOT RETRAINED" not in (seg_bundle.path / "docs" / "README.md").read_text()
    assert meta["eval_metrics"]["test_dice"] == m["metrics"]["test"]["dice"]["value"]


def test_export_ran_monais_checks(cls_bundle: SimpleNamespace, seg_bundle: SimpleNamespace) -> None:
    for b in (cls_bundle, seg_bundle):
        checks = b.result.checks
        assert checks["metadata"].startswith("MONAI schema") or checks["metadata"].startswith(
            "required fields"
        )
        assert "verify_net_in_out passed" in checks["net_in_out"]
        assert checks["pipeline_agreement"]["max_abs_diff"] <= 1e-4


# Both in the slow set (a `python -m monai.bundle` process each, 14 s for the segmentation bundle); the in-process
# MONAI checks of every export stay in the fast set.
@pytest.mark.slow
@pytest.mark.parametrize("which", ["cls_bundle", "seg_bundle"])
def test_monai_verify_commands_pass(which: str, request: pytest.FixtureRequest, schema: Path) -> None:
    bundle = request.getfixturevalue(which).path
    meta, config = str(bundle / "configs" / "metadata.json"), str(bundle / "configs" / "inference.json")
    proc = _monai("verify_metadata", "--meta_file", meta, "--filepath", str(schema))
    assert proc.returncode == 0 and "metadata is verified with no error" in proc.stdout + proc.stderr, (
        proc.stderr[-2000:]
    )
    proc = _monai(
        "verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", config, "--device", "cpu"
    )
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("which", ["cls_bundle", "seg_bundle"])
def test_onnx_and_torchscript_match_pytorch(which: str, request: pytest.FixtureRequest) -> None:
    import onnxruntime as ort
    import torch

    from mednas.spec import ArchSpec, build

    bundle = request.getfixturevalue(which).path
    m = _meta(bundle)["mednas"]
    for fmt in ("onnx", "torchscript"):
        assert 0.0 <= m["exports"][fmt]["max_abs_diff"] <= 1e-4
        assert m["exports"][fmt]["n_inputs"] >= 3
    assert not list(bundle.glob("models/*.data"))  # weights inside the .onnx file
    net = build(ArchSpec.from_dict(m["spec"]))
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    window = _meta(bundle)["network_data_format"]["inputs"]["image"]["spatial_shape"]
    x = torch.randn(3, 1, *window, generator=torch.Generator().manual_seed(7))  # a batch size never exported
    with torch.no_grad():
        ref = net(x).numpy()
        ts = torch.jit.load(str(bundle / "models" / "model.ts"))(x).numpy()
    onnx_out = ort.InferenceSession(
        str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, {"image": x.numpy()})[0]
    assert np.abs(onnx_out - ref).max() <= 1e-4
    assert np.abs(ts - ref).max() <= 1e-4


def test_search_record_has_every_trial(cls_bundle: SimpleNamespace) -> None:
    record = json.loads((cls_bundle.path / "search_record.json").read_text())
    trials = sorted(p.name for p in (cls_bundle.run.run_dir / "trials").iterdir())
    assert [str(t["trial"]) for t in record["trials"]] == trials
    for t in record["trials"]:
        assert t["state"] in ("complete", "pruned", "infeasible", "failed")
        assert isinstance(t["seed"], int) and t["spec"]["target"].startswith("monai.networks.nets.")
    complete = [t for t in record["trials"] if t["state"] == "complete"]
    assert complete and all("ci95" in v for t in complete for v in t["metrics"].values())
    assert record["exported"] == {"trial": cls_bundle.result.trial, "source": "proxy"}


def test_no_identifying_values_in_bundle(cls_bundle: SimpleNamespace, seg_bundle: SimpleNamespace) -> None:
    for b in (cls_bundle, seg_bundle):
        run_dir, datalist = b.run.run_dir, b.run.datalist
        splits = json.loads((run_dir / "splits.json").read_text())
        fingerprint = json.loads((run_dir / "fingerprint.json").read_text())
        entries = json.loads(datalist.read_text())["training"]
        secrets = {k for s in ("train", "val", "test") for k in splits[s]}
        secrets |= {r["patient"] for r in fingerprint["cases"]}
        secrets |= {Path(e["image"]).name for e in entries} | {e["patient"] for e in entries}
        secrets |= {str(datalist.parent), (run_dir / ".salt").read_text().strip()}
        texts = {
            p: p.read_text(errors="replace")
            for p in b.path.rglob("*")
            if p.is_file() and p.suffix in ("", ".json", ".md", ".sha256")
        }
        for path, text in texts.items():
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{path.name} contains {leaked[:3]}"
        for split, n in b.result.metadata["mednas"]["data"]["splits"].items():
            assert isinstance(n, int), split  # aggregates only


def test_failed_export_writes_nothing(
    cls_run: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.bundle._bundle as bundle_mod
    from mednas.bundle import Conversion

    def diverging(model, inputs, path):  # noqa: ANN001, ANN202
        path.write_bytes(b"not really onnx")
        return Conversion("onnx", "models/model.onnx", "dynamo", 0.5, 3, 0.0)

    monkeypatch.setattr(bundle_mod, "export_onnx", diverging)
    before = (cls_run.run_dir / "summary.json").read_text()
    out = tmp_path / "out" / "bundle"
    with pytest.raises(
        MednasError, match=r"onnx export differs from eager PyTorch by 0.5 .*nothing was written"
    ):
        api.export(cls_run.run_dir, out)
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []
    assert (cls_run.run_dir / "summary.json").read_text() == before


def test_export_formats_and_missing_onnx(
    cls_run: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
        code = main(["export", str(cls_run.run_dir), "--out", str(tmp_path / "b1")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and 'pip install "mednas[export]"' in err[0], err
        assert not (tmp_path / "b1").exists()
        code = main(
            ["export", str(cls_run.run_dir), "--out", str(tmp_path / "b2"), "--format", "torchscript"]
        )
    out = capsys.readouterr().out
    assert (
        code == 0 and "PROXY CANDIDATE, NOT RETRAINED" in out and "torchscript" in out and "onnx (" not in out
    )
    assert (tmp_path / "b2" / "models" / "model.ts").exists() and not (
        tmp_path / "b2" / "models" / "model.onnx"
    ).exists()
    assert set(_meta(tmp_path / "b2")["mednas"]["exports"]) == {"torchscript"}
    assert main(["export", str(cls_run.run_dir), "--format", "tflite"]) == 2


def test_reexport_replaces_bundle_and_refuses_foreign_folder(
    cls_bundle: SimpleNamespace, tmp_path: Path
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MednasError, match="not a mednas bundle"):
        api.export(cls_bundle.run.run_dir, foreign, formats="torchscript")
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "b"
    api.export(cls_bundle.run.run_dir, out, formats="torchscript")
    (out / "stale.txt").write_text("from the first export")
    api.export(cls_bundle.run.run_dir, out, formats="torchscript")
    assert not (out / "stale.txt").exists() and (out / "models" / "model.ts").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_checksums_are_sha256sum_format(seg_bundle: SimpleNamespace) -> None:
    import shutil

    lines = (seg_bundle.path / "checksums.sha256").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in lines}
    assert listed == BUNDLE_FILES - {"checksums.sha256"}
    if shutil.which("sha256sum"):
        proc = subprocess.run(
            ["sha256sum", "-c", "checksums.sha256"], cwd=seg_bundle.path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("how", ["zscore", "percentile", "ct"])
def test_bundle_normalisation_is_mednas_normalisation(how: str) -> None:
    import torch

    from mednas.bundle._pipeline import instantiate, normalize_entry
    from mednas.data import normalize_transform

    x = np.random.default_rng(0).normal(50, 400, size=(1, 9, 10, 11)).astype(np.float32)
    x[:, :2] = 0
    expected = np.asarray(normalize_transform(how, (-200.0, 300.0))(torch.from_numpy(x.copy())))
    (entry,) = normalize_entry(how, (-200.0, 300.0))
    got = np.asarray(instantiate(*entry)({"image": torch.from_numpy(x.copy())})["image"])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_scrub_text_removes_paths_and_file_names() -> None:
    from mednas.bundle import scrub_text

    assert scrub_text("DataError: /data/DOE_JANE/ct.nii.gz: truncated") == "DataError: <path>: truncated"
    assert scrub_text("cannot read DOE_JANE_0001.dcm (corrupt)") == "cannot read <file> (corrupt)"
    assert scrub_text("pruned at epoch 2 (objective 0.5000)") == "pruned at epoch 2 (objective 0.5000)"
    assert scrub_text(None) is None


def test_export_ships_the_preprocessing_the_run_recorded(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    import shutil

    from mednas.data._plan import PREPROCESSING

    source = cls_bundle.run.run_dir
    recorded = json.loads((source / PREPROCESSING).read_text())  # the data plan wrote it at search time
    assert _meta(cls_bundle.path)["mednas"]["pipeline"]["normalize"] == recorded["normalize"]
    run_dir = Path(shutil.copytree(source, tmp_path / "run", ignore=shutil.ignore_patterns("bundle")))
    suggested = json.loads((run_dir / "fingerprint.json").read_text())["suggestions"]["normalize"]
    other = "zscore" if suggested != "zscore" else "percentile"
    (run_dir / PREPROCESSING).write_text(json.dumps({**recorded, "normalize": other}))
    api.export(run_dir, tmp_path / "b1", formats="torchscript")
    assert _meta(tmp_path / "b1")["mednas"]["pipeline"]["normalize"] == other
    assert other in (tmp_path / "b1" / "docs" / "README.md").read_text()
    # A run made before the record existed: the plan's rule decides it again, from the fingerprint.
    (run_dir / PREPROCESSING).unlink()
    api.export(run_dir, tmp_path / "b2", formats="torchscript")
    assert _meta(tmp_path / "b2")["mednas"]["pipeline"]["normalize"] == suggested
    assert not (run_dir / PREPROCESSING).exists()  # export reads the run, never writes its records
