"""Hostile images: bad geometry and header bombs are refused per case with one line, before allocation."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot

_BAD_AFFINES = {
    "singular": np.diag([1.0, 1.0, 0.0, 1.0]),
    "zero": np.zeros((4, 4)),
    "nan": np.full((4, 4), np.nan),
}


def _nifti_with_affine(path: Path, affine: np.ndarray, shape: tuple[int, ...] = (8, 8, 8)) -> Path:
    import nibabel as nib

    raw = bytearray(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)).to_bytes())
    struct.pack_into("<hh", raw, 252, 0, 1)  # qform_code 0, sform_code 1: the sform rows below are the affine
    struct.pack_into("<12f", raw, 280, *np.asarray(affine, dtype=float)[:3].ravel())
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _header_bomb(path: Path, shape: tuple[int, ...] = (1024, 1024, 256)) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw + b"\0" * 64)
    return path


def _task_with_case(tmp_path: Path, datalist: Path, bad: Path) -> Path:
    from mednas.testing import tiny_task

    entries = json.loads(datalist.read_text())["training"]
    entries = [{**e, "image": str(datalist.parent / e["image"])} for e in entries]
    entries[0] = {**entries[0], "image": str(bad)}
    own = tmp_path / "datalist.json"
    own.write_text(json.dumps({"training": entries}))
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(tiny_task("classification", own)))
    return task


@pytest.mark.parametrize("kind", sorted(_BAD_AFFINES))
def test_bad_affine_inspect(tmp_path: Path, kind: str) -> None:
    path = _nifti_with_affine(tmp_path / f"{kind}.nii.gz", _BAD_AFFINES[kind])
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "affine" in line


@pytest.mark.parametrize("kind", sorted(_BAD_AFFINES))
def test_bad_affine_validate_lists_case(tmp_path: Path, tiny_cls_datalist: Path, kind: str) -> None:
    bad = _nifti_with_affine(tmp_path / f"{kind}.nii.gz", _BAD_AFFINES[kind])
    task = _task_with_case(tmp_path, tiny_cls_datalist, bad)
    out = mednas_cli("validate", task)
    assert_refused(out, str(task), "1 bad case", code=3)
    assert f"{bad}: image geometry (affine)" in out.out


def test_bad_affine_search_writes_nothing(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    bad = _nifti_with_affine(tmp_path / "nan.nii.gz", _BAD_AFFINES["nan"])
    task = _task_with_case(tmp_path, tiny_cls_datalist, bad)
    before = snapshot(tmp_path)
    run_dir = tmp_path / "runs" / "x"
    line = assert_refused(mednas_cli("search", task, "--run-dir", run_dir, "--quiet"))
    assert "bad case" in line and str(bad) in line
    assert not run_dir.exists()
    assert_unchanged(before, tmp_path)


def test_singular_nrrd_directions(tmp_path: Path) -> None:
    import nrrd

    path = tmp_path / "flat.nrrd"
    nrrd.write(
        str(path),
        np.ones((4, 4, 4), np.int16),
        {"space": "left-posterior-superior", "space directions": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]},
        index_order="F",
    )
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "singular" in line


@pytest.mark.parametrize("name", ["bomb.nii.gz", "bomb.nii"])
def test_nifti_header_bomb_is_refused_fast(tmp_path: Path, name: str) -> None:
    path = _header_bomb(tmp_path / name)
    assert path.stat().st_size < 1000
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "declares 1024 x 1024 x 256" in line


def _max_rss_kib(path: Path) -> tuple[int, int]:
    code = (
        "import resource, sys\n"
        "from mednas.cli import main\n"
        f"rc = main(['inspect', {str(path)!r}])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    return proc.returncode, int(proc.stdout.split()[-1])


def test_nifti_header_bomb_stays_small_in_memory(tmp_path: Path) -> None:
    import nibabel as nib

    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), small)
    code, baseline = _max_rss_kib(small)
    assert code == 0
    code, bomb = _max_rss_kib(_header_bomb(tmp_path / "bomb.nii.gz"))
    assert code == 3
    # The header declares 1 GiB; before the check, reading it peaked at about 1.1 GiB.
    assert bomb - baseline < 64 * 1024, f"max RSS {bomb} KiB against {baseline} KiB for a tiny image"


def test_max_image_bytes_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib

    path = tmp_path / "real.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.float32), np.eye(4)), path)
    monkeypatch.setenv("MEDNAS_MAX_IMAGE_BYTES", "64K")
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "MEDNAS_MAX_IMAGE_BYTES" in line
    monkeypatch.setenv("MEDNAS_MAX_IMAGE_BYTES", "1G")
    assert mednas_cli("inspect", path).code == 0


def _png(path: Path, width: int, height: int) -> Path:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(("width", "height"), [(100_000_000, 1), (60_000, 60_000)])
def test_png_pixel_bomb(tmp_path: Path, width: int, height: int) -> None:
    path = _png(tmp_path / "bomb.png", width, height)
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "declares" in line


def test_dicom_absurd_rows(tmp_path: Path) -> None:
    import pydicom

    from tests.io._helpers import pydicom_file

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 65535, 65535
    path = tmp_path / "absurd.dcm"
    ds.save_as(path)
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "DICOM Rows x Columns" in line


@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_nrrd_header_bomb(tmp_path: Path, encoding: str) -> None:
    import zlib

    path = tmp_path / f"bomb-{encoding}.nrrd"
    payload = zlib.compress(b"\0" * 100) if encoding == "gzip" else b"\0" * 100
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nendian: little\nsizes: 1024 1024 1024\n"
        + f"encoding: {encoding}\n\n".encode()
        + payload
    )
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "NRRD header declares 1024 x 1024 x 1024" in line


@pytest.mark.parametrize(
    ("orientation", "problem"), [([0, 0, 0, 0, 1, 0], "zero direction"), ([1, 0, 0, 1, 0, 0], "parallel")]
)
def test_dicom_degenerate_orientation(tmp_path: Path, orientation: list[int], problem: str) -> None:
    import pydicom

    from tests.io._helpers import pydicom_file

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.ImageOrientationPatient = orientation
    path = tmp_path / "flat.dcm"
    ds.save_as(path)
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert problem in line


def test_fifo_image_does_not_hang(tmp_path: Path) -> None:
    import os

    path = tmp_path / "pipe.nii"
    os.mkfifo(path)
    line = assert_refused(mednas_cli("inspect", path), str(path), code=3)
    assert "not a regular file" in line
