"""Bundles changed by someone who recomputes ``checksums.sha256``: digest pinning, HMAC signatures, NaN weights,
pickled or garbage model files, and specs with unknown or giant arguments. Each is refused with one line."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mednas
from mednas.bundle import SIGNATURE, bundle_digest, sign_bundle, write_checksums
from mednas.io import read_json, write_json
from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot


def _images(bundle: SimpleNamespace, n: int = 2) -> list[str]:
    return [str(p) for p in sorted((bundle.run.datalist.parent / "images").glob("*.png"))[:n]]


def _scale_weights(bundle: Path, factor: float) -> None:
    path = bundle / "models" / "model.pt"
    state = torch.load(path, weights_only=True)
    torch.save({k: v * factor if v.is_floating_point() else v for k, v in state.items()}, path)
    write_checksums(bundle)  # what an attacker (or a careless script) does after changing a file


def _edit_spec(bundle: Path, **kwargs: object) -> None:
    """Make the bundle's spec a small DenseNet with some arguments changed (hash dropped, checksums recomputed)."""
    meta_file = bundle / "configs" / "metadata.json"
    meta = read_json(meta_file)
    meta["mednas"]["spec"] = {
        "target": "monai.networks.nets.DenseNet",
        "family": "densenet",
        "kwargs": {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "init_features": 4,
            "growth_rate": 4,
            "block_config": [1, 1, 1, 1],
            **kwargs,
        },
    }
    write_json(meta_file, meta)
    write_checksums(bundle)


@pytest.fixture
def no_proxy_warning() -> Iterator[None]:
    """Keep the (correct) "proxy candidate" warning off stderr, so the refusal is the only line."""
    loggers = [logging.getLogger(n) for n in ("mednas.bundle._predict", "mednas.bundle._source")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    yield
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)


@pytest.fixture
def cls_copy(cls_bundle: SimpleNamespace, bundle_copy: Callable[[Path], Path]) -> Path:
    return bundle_copy(cls_bundle.path)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "team.key"
    path.write_text("6f1d0c3a9b2e4f5a8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f\n")
    return path


# ------------------------------------------------------------------------------------------- digest, HMAC


def test_digest_is_the_sha256_of_the_listing_and_export_reports_it(cls_bundle: SimpleNamespace) -> None:
    digest = bundle_digest(cls_bundle.path)  # the session bundle may have been re-exported since
    assert len(cls_bundle.result.digest) == 64 and set(cls_bundle.result.digest) <= set("0123456789abcdef")
    assert digest == hashlib.sha256((cls_bundle.path / "checksums.sha256").read_bytes()).hexdigest()
    last = read_json(cls_bundle.run.run_dir / "summary.json")[
        "export"
    ]  # the run's latest export, maybe elsewhere
    last_path = cls_bundle.run.run_dir / last["path"]  # relative, or absolute outside the run directory
    assert last["digest"] == bundle_digest(last_path)
    assert "--expect-digest" in (cls_bundle.path / "docs" / "README.md").read_text()
    assert mednas.load(cls_bundle.path, expect_digest=digest.upper()).digest == digest


def test_expect_digest_refuses_changed_weights_with_recomputed_checksums(
    cls_bundle: SimpleNamespace, cls_copy: Path, tmp_path: Path
) -> None:
    digest = bundle_digest(cls_bundle.path)  # the session bundle may have been re-exported since
    _scale_weights(cls_copy, 0.5)
    mednas.load(cls_copy)  # the listing agrees with the files: checksums alone accept it
    before = snapshot(cls_copy)
    out = tmp_path / "pred"
    line = assert_refused(
        mednas_cli("predict", cls_copy, *_images(cls_bundle), "--out", out, "--expect-digest", digest),
        str(cls_copy),
        digest,
        code=5,
    )
    assert "is not the expected" in line
    assert not out.exists()
    assert_unchanged(before, cls_copy)
    with pytest.raises(mednas.MednasError, match="is not the expected"):
        mednas.load(cls_copy, expect_digest=digest)


def test_malformed_expect_digest_is_one_line(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    assert_refused(
        mednas_cli(
            "predict",
            cls_bundle.path,
            *_images(cls_bundle),
            "--out",
            tmp_path / "p",
            "--expect-digest",
            "abc123",
        ),
        "--expect-digest",
        code=5,
    )
    assert not (tmp_path / "p").exists()


def test_signed_bundle_verifies_and_wrong_key_or_missing_signature_is_refused(
    cls_bundle: SimpleNamespace, cls_copy: Path, key: Path, tmp_path: Path
) -> None:
    images = _images(cls_bundle)
    out = tmp_path / "no-sig"
    assert_refused(
        mednas_cli("predict", cls_copy, *images, "--out", out, "--verify-key", key, "--quiet"),
        SIGNATURE,
        "not signed",
        code=5,
    )
    assert not out.exists()
    sign_bundle(cls_copy, key)
    ok = mednas_cli(
        "predict",
        cls_copy,
        *images,
        "--out",
        tmp_path / "ok",
        "--verify-key",
        key,
        "--quiet",
        "--expect-digest",
        bundle_digest(cls_bundle.path),
    )
    assert ok.code == 0, ok.err
    wrong = tmp_path / "other.key"
    wrong.write_text("0" * 64)
    before = snapshot(cls_copy)
    assert_refused(
        mednas_cli("predict", cls_copy, *images, "--out", tmp_path / "wrong", "--verify-key", wrong),
        SIGNATURE,
        "does not match",
        code=5,
    )
    # the attacker changes the weights, recomputes checksums, and cannot recompute the HMAC without the key
    _scale_weights(cls_copy, 2.0)
    with pytest.raises(mednas.MednasError, match="signature does not match"):
        mednas.load(cls_copy, verify_key=key)
    assert not (tmp_path / "wrong").exists()
    (cls_copy / SIGNATURE).write_text("{not json")
    with pytest.raises(mednas.MednasError, match="not a mednas signature"):
        mednas.load(cls_copy, verify_key=key)
    assert set(before) == set(snapshot(cls_copy))


def test_short_or_missing_key_file_is_one_line(cls_bundle: SimpleNamespace, tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc")
    assert_refused(
        mednas_cli(
            "predict", cls_bundle.path, *_images(cls_bundle), "--out", tmp_path / "p", "--verify-key", short
        ),
        str(short),
        "16 bytes",
    )
    assert_refused(
        mednas_cli(
            "predict",
            cls_bundle.path,
            *_images(cls_bundle),
            "--out",
            tmp_path / "p",
            "--verify-key",
            tmp_path / "nope.key",
        ),
        "nope.key",
    )
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------------ NaN outputs


@pytest.mark.usefixtures("no_proxy_warning")
def test_nan_weights_fail_every_case_and_write_no_label(
    cls_bundle: SimpleNamespace, cls_copy: Path, tmp_path: Path
) -> None:
    _scale_weights(cls_copy, float("nan"))
    images = _images(cls_bundle, 3)
    out = tmp_path / "pred"
    line = assert_refused(
        mednas_cli("predict", cls_copy, *images, "--out", out, "--quiet"), images[0], code=7
    )
    assert "NaN" in line and "no prediction" in line and "3 of 3 cases failed" in line
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert rows == []  # header only: no label, no probability for a failed case
    failed = list(csv.DictReader((out / "failed.csv").open()))
    assert [r["case"] for r in failed] == images
    with pytest.raises(mednas.MednasError, match="NaN"):
        mednas.load(cls_copy)(images[0])


def test_infinite_weights_in_a_segmentation_bundle_write_no_mask(
    seg_bundle: SimpleNamespace, bundle_copy: Callable[[Path], Path], tmp_path: Path
) -> None:
    import json

    bundle = bundle_copy(seg_bundle.path)
    path = bundle / "models" / "model.pt"
    state = torch.load(path, weights_only=True)
    last = [k for k, v in state.items() if v.is_floating_point() and k.endswith("bias")][-1]
    state[last] = torch.full_like(state[last], float("inf"))
    torch.save(state, path)
    write_checksums(bundle)
    entry = json.loads(seg_bundle.run.datalist.read_text())["training"][0]
    scan = str(seg_bundle.run.datalist.parent / entry["image"])
    out = tmp_path / "seg"
    line = assert_refused(mednas_cli("predict", bundle, scan, "--out", out), scan, code=7)
    assert "infinite" in line or "NaN" in line
    assert not list(out.glob("*_seg.nii.gz"))


def test_parity_check_treats_non_finite_as_failure() -> None:
    from mednas.bundle._convert import compare_outputs

    ok = [np.ones((2, 3), np.float32)]
    nan = [np.full((2, 3), np.nan, np.float32)]
    assert compare_outputs(ok, ok) == 0.0
    assert compare_outputs(nan, nan) == float("inf")
    assert compare_outputs(ok, nan) == float("inf")
    assert compare_outputs(ok, [np.full((2, 3), np.inf, np.float32)]) == float("inf")
    assert compare_outputs(ok, []) == float("inf")


@pytest.mark.usefixtures("no_proxy_warning")
def test_export_refuses_nan_weights_in_the_run(
    cls_run: SimpleNamespace,
    cls_bundle: SimpleNamespace,  # noqa: ARG001
    tmp_path: Path,
) -> None:
    import shutil

    run = Path(shutil.copytree(cls_run.run_dir, tmp_path / "run"))
    best = read_json(run / "summary.json")["best"]["trial"]
    weights = run / "trials" / str(best) / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}, weights)
    before = snapshot(run)
    line = assert_refused(
        mednas_cli("export", run, "--out", tmp_path / "b", "--format", "torchscript", "--quiet"),
        str(weights),
        "NaN or infinite",
        code=4,
    )
    assert "nothing was written" in line
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))
    assert_unchanged(before, run)


# ------------------------------------------------------------------------------ pickles and garbage models


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))  # unpickling would create the marker


def test_pickled_model_pt_is_refused_without_running(
    cls_bundle: SimpleNamespace, cls_copy: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled-marker"
    path = cls_copy / "models" / "model.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "x": _Payload(marker)}, path)
    write_checksums(cls_copy)
    line = assert_refused(
        mednas_cli("predict", cls_copy, *_images(cls_bundle), "--out", tmp_path / "p"),
        str(path),
        "not a plain state dict",
        code=5,
    )
    assert "weights_only=False" not in line and "Traceback" not in line
    assert not marker.exists() and not (tmp_path / "p").exists()


@pytest.mark.usefixtures("no_proxy_warning")
def test_pickled_weights_in_a_run_are_refused_by_export(
    cls_run: SimpleNamespace,
    cls_bundle: SimpleNamespace,  # noqa: ARG001
    tmp_path: Path,
) -> None:
    import shutil

    marker = tmp_path / "unpickled-marker"
    run = Path(shutil.copytree(cls_run.run_dir, tmp_path / "run"))
    best = read_json(run / "summary.json")["best"]["trial"]
    weights = run / "trials" / str(best) / "model.pt"
    torch.save({"x": _Payload(marker)}, weights)
    line = assert_refused(
        mednas_cli("export", run, "--out", tmp_path / "b", "--quiet"),
        str(weights),
        "not a plain state dict",
        code=4,
    )
    assert "weights_only=False" not in line
    assert not marker.exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("backend", "name"), [("torchscript", "model.ts"), ("onnx", "model.onnx"), ("torch", "model.pt")]
)
def test_garbage_model_file_is_one_line(
    backend: str, name: str, cls_bundle: SimpleNamespace, cls_copy: Path, tmp_path: Path
) -> None:
    path = cls_copy / "models" / name
    path.write_bytes(b"PK\x03\x04 this is not a model" * 10)
    write_checksums(cls_copy)
    assert_refused(
        mednas_cli("predict", cls_copy, *_images(cls_bundle), "--out", tmp_path / "p", "--backend", backend),
        str(path),
        code=5,
    )
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------ spec arguments


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"bogus": 1}, "takes no argument 'bogus'"),
        ({"init_features": 10**9}, "exceeds"),
        ({"init_features": 60000, "growth_rate": 60000}, "parameters, more than the limit"),
        ({"act": "os.system"}, "cannot be built"),
    ],
)
def test_spec_arguments_are_checked_before_building(
    kwargs: dict[str, object], says: str, cls_bundle: SimpleNamespace, cls_copy: Path, tmp_path: Path
) -> None:
    _edit_spec(cls_copy, **kwargs)
    before = snapshot(cls_copy)
    line = assert_refused(
        mednas_cli("predict", cls_copy, *_images(cls_bundle), "--out", tmp_path / "p"),
        "configs/metadata.json",
        code=5,
    )
    assert says in line, line
    assert not (tmp_path / "p").exists()
    assert_unchanged(before, cls_copy)


@pytest.mark.usefixtures("no_proxy_warning")
def test_export_prints_the_digest_and_signs_with_the_key(
    cls_run: SimpleNamespace,
    cls_bundle: SimpleNamespace,  # noqa: ARG001
    key: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    run = Path(shutil.copytree(cls_run.run_dir, tmp_path / "run"))
    monkeypatch.setenv("MEDNAS_BUNDLE_KEY", str(key))  # signing from the environment
    outcome = mednas_cli("export", run, "--out", tmp_path / "b", "--format", "torchscript", "--quiet")
    assert outcome.code == 0, outcome.err
    digest = bundle_digest(tmp_path / "b")
    assert f"bundle digest: {digest} (signed: signature.json)" in outcome.out
    assert f"--expect-digest {digest}" in outcome.out
    assert read_json(tmp_path / "b" / SIGNATURE)["digest"] == digest
    assert (
        mednas.load(tmp_path / "b", expect_digest=digest, verify_key=key, backend="torchscript").digest
        == digest
    )
    monkeypatch.setenv("MEDNAS_BUNDLE_KEY", str(tmp_path / "missing.key"))
    assert_refused(
        mednas_cli("export", run, "--out", tmp_path / "c", "--format", "torchscript"),
        "missing.key",
        "$MEDNAS_BUNDLE_KEY",
    )
    assert not (tmp_path / "c").exists()
