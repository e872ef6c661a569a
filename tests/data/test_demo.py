"""Tests of the embedded demo datasets: deterministic, complete, and their ground truth is where it says.

Small builds (12 radiographs, 4 MRI volumes) keep the module to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mednas.data import _demo
from mednas.data._demo import DEMO_DATASETS, build_demo
from mednas.errors import ConfigError, DataError

N_XRAY = 12
N_MRI = 4


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _datalist(folder: Path) -> dict:
    return json.loads((folder / "datalist.json").read_text())


@pytest.fixture(scope="module")
def xray_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo("xray-nodule", tmp_path_factory.mktemp("demo-a"), n_cases=N_XRAY, seed=0)


@pytest.fixture(scope="module")
def mri_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo("mri-lesion", tmp_path_factory.mktemp("demo-a"), n_cases=N_MRI, seed=0)


# --- API and errors ------------------------------------------------------------------------------------


def test_unknown_name_is_a_one_line_config_error_with_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_demo("xray-nodul", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "'xray-nodul'" in message and "did you mean 'xray-nodule'" in message
    assert not any(tmp_path.iterdir()), "nothing is built for an unknown name"


@pytest.mark.parametrize("kwargs", [{"n_cases": 0}, {"n_cases": 2.5}, {"seed": -1}, {"seed": "0"}])
def test_bad_size_or_seed_is_a_config_error(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_demo("mri-lesion", tmp_path, **kwargs)


def test_registry_describes_both_datasets() -> None:
    xray, mri = DEMO_DATASETS["xray-nodule"], DEMO_DATASETS["mri-lesion"]
    assert (xray.problem, xray.spatial_dims, xray.labels, xray.findings) == (
        "classification",
        2,
        ("normal", "nodule"),
        ("nodule",),
    )
    assert (mri.problem, mri.spatial_dims, mri.labels, mri.findings) == (
        "segmentation",
        3,
        ("background", "lesion"),
        ("lesion",),
    )
    assert (xray.n_cases, mri.n_cases) == (240, 48)


def test_folder_name_and_second_call_reuses_the_build(
    xray_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = DEMO_DATASETS["xray-nodule"]
    assert xray_dir.name == f"xray-nodule-v{info.version}-n{N_XRAY}-s0"

    def fail(*args: object) -> None:
        raise AssertionError("rebuilt an existing dataset")

    monkeypatch.setitem(_demo._BUILDERS, "xray-nodule", fail)
    assert build_demo("xray-nodule", xray_dir.parent, n_cases=N_XRAY, seed=0) == xray_dir


def test_folder_without_datalist_is_a_data_error(tmp_path: Path) -> None:
    info = DEMO_DATASETS["xray-nodule"]
    (tmp_path / f"xray-nodule-v{info.version}-n3-s0").mkdir()
    with pytest.raises(DataError, match="datalist.json"):
        build_demo("xray-nodule", tmp_path, n_cases=3)


def test_concurrent_builders_leave_one_complete_folder(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        folders = list(pool.map(lambda _: build_demo("xray-nodule", tmp_path, n_cases=5, seed=3), range(3)))
    assert len(set(folders)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [folders[0].name], "temporary folders were left behind"
    assert len(_datalist(folders[0])["training"]) == 5


# --- determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", [("xray-nodule", N_XRAY), ("mri-lesion", N_MRI)])
def test_same_seed_gives_byte_identical_files(
    name: str, n: int, xray_dir: Path, mri_dir: Path, tmp_path: Path
) -> None:
    first = xray_dir if name == "xray-nodule" else mri_dir
    # Reload the source anatomy too, so that its preparation is covered by the comparison.
    _demo._xray_source.cache_clear()
    _demo._mri_source.cache_clear()
    second = build_demo(name, tmp_path, n_cases=n, seed=0)
    assert second != first
    assert _hashes(second) == _hashes(first)


def test_another_seed_gives_other_images(xray_dir: Path, tmp_path: Path) -> None:
    other = build_demo("xray-nodule", tmp_path, n_cases=N_XRAY, seed=1)
    first = (xray_dir / _datalist(xray_dir)["training"][0]["image"]).read_bytes()
    assert (other / _datalist(other)["training"][0]["image"]).read_bytes() != first


# --- datalist structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["xray", "mri"])
def test_datalist_is_a_monai_datalist_of_simulated_cases(which: str, xray_dir: Path, mri_dir: Path) -> None:
    folder, n, name = (xray_dir, N_XRAY, "xray-nodule") if which == "xray" else (mri_dir, N_MRI, "mri-lesion")
    dl = _datalist(folder)
    info = DEMO_DATASETS[name]
    assert dl["name"] == name and dl["simulated"] is True and dl["description"]
    assert dl["labels"] == {str(i): label for i, label in enumerate(info.labels)}
    assert dl["modality"] == info.modality
    notice = (folder / "NOTICE.txt").read_text()
    assert "SIMULATED" in notice and (
        "MIT License" in notice if which == "xray" else "Louis Collins" in notice
    )
    assert len(dl["training"]) == n
    prefix = "sim-xr-" if which == "xray" else "sim-mr-"
    for case in dl["training"]:
        assert not Path(case["image"]).is_absolute() and (folder / case["image"]).is_file()
        assert re.fullmatch(prefix + r"\d{4}", case["patient"])
        if which == "mri":
            assert not Path(case["label"]).is_absolute() and (folder / case["label"]).is_file()
    listed = {c["image"] for c in dl["training"]} | {
        c["label"] for c in dl["training"] if isinstance(c["label"], str)
    }
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {
        "datalist.json",
        "NOTICE.txt",
    }
    assert listed == on_disk, "every file is listed, every listed file exists"


def test_xray_patients_share_their_label_and_both_classes_occur(xray_dir: Path) -> None:
    cases = _datalist(xray_dir)["training"]
    by_patient: dict[str, set[int]] = {}
    for case in cases:
        assert case["label"] in (0, 1)
        assert bool(case["nodules"]) == (case["label"] == 1)
        by_patient.setdefault(case["patient"], set()).add(case["label"])
    assert all(len(labels) == 1 for labels in by_patient.values())
    assert len(by_patient) < len(cases), "some simulated patients have two images"
    assert {c["label"] for c in cases} == {0, 1}


# --- ground truth is in the images ---------------------------------------------------------------------


def test_xray_images_are_16_bit_and_nodules_are_brighter_than_their_surroundings(xray_dir: Path) -> None:
    from skimage.io import imread

    n_nodules = 0
    for case in _datalist(xray_dir)["training"]:
        pixels = imread(xray_dir / case["image"])
        assert pixels.dtype == np.uint16 and pixels.shape == DEMO_DATASETS["xray-nodule"].image_shape
        image = pixels / 65535.0
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        for x, y, r, contrast in case["nodules"]:
            assert 2.0 <= r <= 10.0 and contrast > 0
            assert 0 <= x < image.shape[1] and 0 <= y < image.shape[0]
            d = np.hypot(yy - y, xx - x)
            core, ring = image[d <= max(1.0, 0.5 * r)].mean(), image[(d >= r + 2) & (d <= r + 4)].mean()
            assert core - ring > 0.05, f"{case['image']}: nodule at ({x}, {y}) not visible"
            n_nodules += 1
    assert n_nodules > 0


def test_mri_image_and_label_share_grid_and_affine_in_mni_mm(mri_dir: Path) -> None:
    import nibabel as nib

    for case in _datalist(mri_dir)["training"]:
        image, label = nib.load(mri_dir / case["image"]), nib.load(mri_dir / case["label"])
        assert image.shape == label.shape == DEMO_DATASETS["mri-lesion"].image_shape
        assert np.allclose(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert np.allclose(np.abs(np.diag(image.affine)[:3]), 3.0)
        # The grid covers the brain: MNI (0, 0, 0) lies well inside it.
        origin_vox = np.linalg.inv(image.affine) @ np.array([0.0, 0.0, 0.0, 1.0])
        assert np.all((origin_vox[:3] > 16) & (origin_vox[:3] < 48))
        assert label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}


def test_mri_lesions_lie_in_the_brain_and_differ_from_white_matter(mri_dir: Path) -> None:
    import nibabel as nib
    from scipy import ndimage as ndi

    src = _demo._mri_source()
    cases = _datalist(mri_dir)["training"]
    assert any(c["lesions"] for c in cases) and not all(c["lesions"] for c in cases)
    for i, case in enumerate(cases):
        label = np.asarray(nib.load(mri_dir / case["label"]).dataobj)
        image = np.asarray(nib.load(mri_dir / case["image"]).dataobj, dtype=np.float64)
        assert (label.sum() > 0) == bool(case["lesions"])
        # Replay the case's deformation (the first draws of its stream) to get its brain and WM masks.
        _, brain, wm = _demo._mri_warp(_demo._rng(0, i), src)
        assert not np.any(label.astype(bool) & ~brain), f"{case['label']}: lesion voxels outside the brain"
        components, n = ndi.label(label)
        assert n >= 1 or not case["lesions"]
        for ci, cj, ck, radius, contrast in case["lesions"]:
            assert 1.5 <= radius <= 7.0 and label[ci, cj, ck] == 1 and wm[ci, cj, ck] > 0.5
            lesion = components == components[ci, cj, ck]
            ring = (
                ndi.binary_dilation(lesion, iterations=3)
                & ~ndi.binary_dilation(lesion)
                & (wm > 0.5)
                & (label == 0)
            )
            core = ndi.binary_erosion(lesion) if ndi.binary_erosion(lesion).any() else lesion
            ratio = image[core].mean() / image[ring].mean()
            assert (ratio > 1.05) if contrast > 0 else (ratio < 0.95), (
                f"lesion contrast {contrast}: ratio {ratio:.2f}"
            )
