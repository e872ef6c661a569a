"""Edited specs that name a callable instead of a network: every command refuses them before resolving anything.

The payloads are the ones of issue 13: ``monai.networks.nets.hovernet.download_url`` with a ``data:`` URL and a
destination path (writes any file the process can write), and ``monai.networks.nets.flexible_unet.locate``
(``pydoc.locate``: imports any module). Each is planted in a bundle's ``configs/metadata.json`` (checksums recomputed,
as an attacker would) and in a run directory's ``trials/<n>/spec.json``, then run through ``predict``, ``mednas.load``,
``export``, ``report`` and ``retrain``. The payload's marker file must never appear.
"""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import mednas
from mednas.bundle import write_checksums
from mednas.io import read_json, write_json
from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot

_PAYLOAD_MODULE = "mednas_hostile_payload"


def _download_url(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    marker = tmp_path / "site-packages" / "evil.pth"
    code = base64.b64encode(b"import os; open(os.path.expanduser('~/pwned'), 'w')\n").decode()
    spec = {
        "target": "monai.networks.nets.hovernet.download_url",
        "kwargs": {"url": f"data:text/plain;base64,{code}", "filepath": str(marker), "progress": False},
    }
    return spec, marker


def _locate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Path]:
    """pydoc.locate of a module on sys.path whose import writes the marker (in-process commands only)."""
    marker = tmp_path / "located-marker"
    folder = tmp_path / "payload"
    folder.mkdir(exist_ok=True)
    (folder / f"{_PAYLOAD_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, _PAYLOAD_MODULE, raising=False)
    return {"target": "monai.networks.nets.flexible_unet.locate", "kwargs": {"path": _PAYLOAD_MODULE}}, marker


@pytest.fixture(params=["download_url", "locate"])
def payload(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SimpleNamespace:
    """A hostile spec, the marker its code would create, and the target it names."""
    if request.param == "download_url":
        spec, marker = _download_url(tmp_path)
    else:
        spec, marker = _locate(tmp_path, monkeypatch)
    return SimpleNamespace(spec=spec, marker=marker, target=spec["target"], kind=request.param)


def _assert_no_payload(p: SimpleNamespace) -> None:
    assert not p.marker.exists(), f"payload ran: {p.marker}"
    assert not p.marker.parent.exists() or p.kind != "download_url", "payload created its destination folder"
    assert _PAYLOAD_MODULE not in sys.modules, "payload module was imported"


def _poison_bundle(path: Path, spec: dict[str, Any]) -> None:
    meta_file = path / "configs" / "metadata.json"
    meta = read_json(meta_file)
    meta["mednas"]["spec"] = spec
    write_json(meta_file, meta)
    write_checksums(path)  # the attacker recomputes the listing


def _poison_run(run_dir: Path, spec: dict[str, Any]) -> list[Path]:
    files = sorted((run_dir / "trials").glob("*/spec.json"))
    assert files
    for f in files:
        write_json(f, {**spec, "family": "resnet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2})
    return files


@pytest.fixture
def run_copy(cls_run: SimpleNamespace, cls_bundle: SimpleNamespace, tmp_path: Path) -> Path:  # noqa: ARG001
    """A copy of the exported classification run (bundle included), for editing."""
    return Path(shutil.copytree(cls_run.run_dir, tmp_path / "run-copy"))


def _images(cls_bundle: SimpleNamespace, n: int = 2) -> list[str]:
    return [str(p) for p in sorted((cls_bundle.run.datalist.parent / "images").glob("*.png"))[:n]]


# ------------------------------------------------------------------------------------------------ bundles


def test_bundle_payload_refused_by_predict(
    payload: SimpleNamespace, cls_bundle: SimpleNamespace, bundle_copy: Callable[[Path], Path], tmp_path: Path
) -> None:
    bundle = bundle_copy(cls_bundle.path)
    _poison_bundle(bundle, payload.spec)
    before = snapshot(bundle)
    out = tmp_path / "pred"
    line = assert_refused(
        mednas_cli("predict", bundle, *_images(cls_bundle), "--out", out),
        "configs/metadata.json",
        payload.target,
        code=5,
    )
    assert "not an allowed network class" in line
    assert not out.exists()
    assert_unchanged(before, bundle)
    _assert_no_payload(payload)


@pytest.mark.parametrize("backend", ["torch", "torchscript", "onnx"])
def test_bundle_payload_refused_by_load(
    payload: SimpleNamespace, backend: str, cls_bundle: SimpleNamespace, bundle_copy: Callable[[Path], Path]
) -> None:
    bundle = bundle_copy(cls_bundle.path)
    _poison_bundle(bundle, payload.spec)
    before = snapshot(bundle)
    with pytest.raises(mednas.MednasError) as info:
        mednas.load(bundle, backend=backend)
    assert info.value.exit_code == 5
    assert (
        "metadata.json" in str(info.value)
        and payload.target in str(info.value)
        and "\n" not in str(info.value)
    )
    assert_unchanged(before, bundle)
    _assert_no_payload(payload)


# ------------------------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("command", ["export", "report", "report-no-images", "retrain"])
def test_run_dir_payload_refused(
    payload: SimpleNamespace, command: str, run_copy: Path, tmp_path: Path
) -> None:
    files = _poison_run(run_copy, payload.spec)
    before = snapshot(run_copy)
    args = {
        "export": ("export", run_copy, "--out", tmp_path / "bundle-out", "--format", "torchscript"),
        "report": ("report", run_copy),
        "report-no-images": ("report", run_copy, "--no-images"),
        "retrain": ("retrain", run_copy, "--top-k", "1", "--seeds", "1", "--epochs", "1"),
    }[command]
    line = assert_refused(mednas_cli(*args, "--quiet"), "spec.json", payload.target, code=4)
    assert any(str(f) in line for f in files), line
    assert not (tmp_path / "bundle-out").exists()
    assert_unchanged(before, run_copy)
    _assert_no_payload(payload)


def test_non_network_module_class_and_plain_callables_are_refused_as_strings() -> None:
    """A real nn.Module outside the list (HoVerNet downloads weights) and non-MONAI paths: refused before import."""
    from mednas.spec import ArchSpec, SpecError

    for target in (
        "monai.networks.nets.HoVerNet",
        "monai.networks.nets.hovernet.HoVerNet",
        "os.system",
        "monai.networks.nets.DynUNet.__init__",
        "monai.networks.nets.",
        42,
    ):
        with pytest.raises(SpecError, match="not an allowed network class"):
            ArchSpec.from_dict({"target": target, "kwargs": {}})


def test_the_payloads_are_live(payload: SimpleNamespace) -> None:
    """Called directly, each payload does create its marker: the refusals above are what stops it."""
    import importlib

    module_name, name = payload.target.rsplit(".", 1)
    func = getattr(importlib.import_module(module_name), name)
    func(**payload.spec["kwargs"])
    assert payload.marker.exists()
    sys.modules.pop(_PAYLOAD_MODULE, None)
