"""The proxy cache (issue 15): one entry per set of cases and shape, built in one pass into one array file read with
memory mapping, never re-reading a source image once it exists; MedMNIST read in place; the cache beside the run
unless the user names another folder, and never in the home directory."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import mednas.io._npz as npz_mod
import mednas.io._raster as raster_mod
from mednas.data import Preprocessing, default_cache_root, load_arrays, load_dataset, plan_data
from mednas.rundir import RunDir
from tests.data._builders import cls_task, config, png

SALT = "test-salt"
PREP = Preprocessing("classification", 2, 1, 2, "percentile")
RAW = Preprocessing(
    "classification", 2, 1, 2, "none"
)  # the 5,000-image test checks the cache, not MONAI's speed


def _medmnist(path: Path, sizes: dict[str, int], size: int = 28) -> Path:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, size, size)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count every image read from a MedMNIST archive, by (split, row)."""
    counts: Counter = Counter()
    real = npz_mod.read_npz_member

    def spy(npz, split, index):  # noqa: ANN001, ANN202
        counts[(split, index)] += 1
        return real(npz, split, index)

    monkeypatch.setattr(npz_mod, "read_npz_member", spy)
    return counts


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_5000_images_cached_in_one_pass_into_one_array_and_never_read_again(
    tmp_path: Path, cache_dir: Path, npz_reads: Counter
) -> None:
    npz = _medmnist(tmp_path / "pneumonia-like.npz", {"train": 4500, "val": 500})
    cases = list(load_dataset(config(cls_task({"format": "medmnist", "path": str(npz)})), SALT).cases)
    assert len(cases) == 5000 and not npz_reads  # listing reads no image
    proxy = cache_dir / "proxy"
    seen: list[tuple[int, int]] = []
    built = load_arrays(cases, (16, 16), RAW, proxy, progress=lambda d, t: seen.append((d, t)))
    # One pass: every source image read exactly once, progress reported as it went.
    assert len(npz_reads) == 5000 and set(npz_reads.values()) == {1}
    assert seen[-1] == (5000, 5000) and len(seen) == 5000
    # One entry: all images in one array file, labels in another, a small index; no per-case files.
    files = _files(proxy)
    assert [p.name for p in files] == ["images.npy", "index.json", "labels.npy"]
    assert len({p.parent for p in files}) == 1 and files[0].stat().st_size >= 5000 * 16 * 16 * 4
    assert built.images.shape == (5000, 1, 16, 16) and built.labels.tolist() == [c.label for c in cases]

    # A later process (no arrays loaded yet): zero reads of source images, the array memory-mapped.
    npz_mod._loaded.clear()
    npz_reads.clear()
    seen.clear()
    again = load_arrays(cases, (16, 16), RAW, proxy, progress=lambda d, t: seen.append((d, t)))
    assert not npz_reads and not npz_mod._loaded  # not even the archive's arrays were loaded
    assert isinstance(again.images, np.memmap) and seen == [(5000, 5000)]
    np.testing.assert_array_equal(again.images, built.images)
    assert again.keys == [c.key for c in cases]
    # The same cases in another order (another run's salt) re-use the entry, rows in the order asked for.
    flipped = load_arrays(cases[::-1], (16, 16), RAW, proxy)
    assert not npz_reads
    np.testing.assert_array_equal(flipped.images, built.images[::-1])
    assert flipped.labels.tolist() == built.labels[::-1].tolist()
    assert _files(proxy) == files


def test_png_datalist_built_once_then_no_image_is_read(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        {
            "image": png(tmp_path / "png" / f"{i}.png", seed=i, bright=i % 2 == 1).name,
            "label": i % 2,
            "patient": f"p{i}",
        }
        for i in range(12)
    ]
    (tmp_path / "png" / "datalist.json").write_text(json.dumps({"training": entries}))
    task = config(cls_task({"format": "datalist", "path": str(tmp_path / "png" / "datalist.json")}))
    cases = list(load_dataset(task, SALT).cases)
    reads: list[str] = []
    real = raster_mod.read_raster
    monkeypatch.setattr(
        raster_mod, "read_raster", lambda path, fmt: reads.append(str(path)) or real(path, fmt)
    )
    first = load_arrays(cases, (8, 8), PREP, cache_dir / "proxy")
    assert sorted(reads) == sorted(c.images[0] for c in cases)  # each file once
    assert len(_files(cache_dir / "proxy")) == 3
    reads.clear()
    second = load_arrays(cases, (8, 8), PREP, cache_dir / "proxy")
    assert reads == []
    np.testing.assert_array_equal(first.images, second.images)
    # Another shape is another entry; a changed source image is a new entry, never a stale one.
    load_arrays(cases, (16, 16), PREP, cache_dir / "proxy")
    assert len(reads) == 12 and len(list((cache_dir / "proxy").iterdir())) == 2
    reads.clear()
    png(Path(cases[0].images[0]), seed=99)
    changed = load_arrays(cases, (8, 8), PREP, cache_dir / "proxy")
    assert len(reads) == 12 and len(list((cache_dir / "proxy").iterdir())) == 3
    assert not np.array_equal(changed.images[0], first.images[0])


def test_broken_entry_is_rebuilt(tmp_path: Path, cache_dir: Path, npz_reads: Counter) -> None:
    npz = _medmnist(tmp_path / "m.npz", {"train": 20})
    cases = list(load_dataset(config(cls_task({"format": "medmnist", "path": str(npz)})), SALT).cases)
    good = np.array(load_arrays(cases, (16, 16), PREP, cache_dir).images)
    (images,) = cache_dir.glob("*/images.npy")
    head = images.read_bytes()[:200]
    images.unlink()  # a new inode: never truncate a file that is memory-mapped (SIGBUS)
    images.write_bytes(head)  # as a copy cut short by a full disk would leave it
    npz_reads.clear()
    again = load_arrays(cases, (16, 16), PREP, cache_dir)
    assert len(npz_reads) == 20
    np.testing.assert_array_equal(again.images, good)
    assert len(list(cache_dir.iterdir())) == 1 and not list(cache_dir.glob(".*"))


def test_cache_lives_beside_the_run_and_never_in_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("MEDNAS_CACHE_DIR", raising=False)
    npz = _medmnist(tmp_path / "m.npz", {"train": 12, "val": 6})
    task_map = cls_task({"format": "medmnist", "path": str(npz)})
    plan = plan_data(config(task_map), RunDir(tmp_path / "run"), salt=SALT)
    assert plan.cache_dir == (tmp_path / "run").resolve() / "cache" / "proxy"
    plan.arrays("train", plan.proxy_shape)
    assert len(_files(plan.cache_dir)) == 3
    # The user's choice wins: data.cache_dir, then $MEDNAS_CACHE_DIR.
    chosen = config(task_map | {"data": {**task_map["data"], "cache_dir": str(tmp_path / "scratch")}})
    assert plan_data(chosen, RunDir(tmp_path / "run2"), salt=SALT).cache_dir == tmp_path / "scratch" / "proxy"
    monkeypatch.setenv("MEDNAS_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_root(config(task_map), tmp_path / "run") == tmp_path / "env"
    monkeypatch.delenv("MEDNAS_CACHE_DIR")
    # Without a run directory (validate, evaluate) derived data go to a temporary folder removed at exit.
    scratch = default_cache_root(config(task_map))
    assert scratch.is_dir() and home not in scratch.parents
    monkeypatch.chdir(tmp_path)
    assert default_cache_root(config(task_map), "run") == (tmp_path / "run").resolve() / "cache"
    assert _files(home) == []
