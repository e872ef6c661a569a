"""Patch training with sliding-window inference on a tiny 3D case, and how full fidelity resolves a patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mednas.config import load_task
from mednas.data import ArrayData
from mednas.errors import ConfigError
from mednas.testing import tiny_task
from mednas.train import Fidelity, FitSettings, fit, predict, seed_everything
from mednas.train._patches import random_patches, sliding_window_logits


def test_random_patches_shapes_clamping_and_determinism() -> None:
    images = torch.randn(3, 2, 9, 10, 11)
    labels = torch.zeros(3, 9, 10, 11, dtype=torch.long)
    x, y = random_patches(images, labels, (4, 12, 5), torch.Generator().manual_seed(0))
    assert tuple(x.shape) == (3, 2, 4, 10, 5) and tuple(y.shape) == (
        3,
        4,
        10,
        5,
    )  # axis 2 clamped to the volume
    again, _ = random_patches(images, labels, (4, 12, 5), torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    other, _ = random_patches(images, labels, (4, 12, 5), torch.Generator().manual_seed(1))
    assert not torch.equal(x, other)


def test_foreground_patches_contain_the_lesion() -> None:
    labels = torch.zeros(8, 20, 20, 20, dtype=torch.long)
    labels[:, 15:17, 2:4, 10:12] = 1  # a small lesion far from the centre
    images = labels[:, None].float()
    gen = torch.Generator().manual_seed(0)
    _, y = random_patches(images, labels, (6, 6, 6), gen, foreground=1.0)
    assert all(int(p.sum()) > 0 for p in y)
    _, y_uniform = random_patches(images, labels, (6, 6, 6), torch.Generator().manual_seed(0), foreground=0.0)
    assert sum(int(p.sum()) > 0 for p in y_uniform) < 8  # uniform placement mostly misses it


def test_sliding_window_covers_an_odd_volume_exactly() -> None:
    conv = torch.nn.Conv3d(1, 2, kernel_size=1)  # pointwise: windows must blend to the whole-volume output
    x = torch.randn(2, 1, 11, 13, 9)
    with torch.no_grad():
        out = sliding_window_logits(conv, x, (8, 8, 8), overlap=0.25)
        assert out.shape == (2, 2, 11, 13, 9)
        assert torch.allclose(out, conv(x), atol=1e-5)


def _toy_seg(n: int = 6, size: int = 12, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size, size), np.uint8)
    for i in range(n):
        c = rng.integers(2, size - 5, size=3)
        labels[i, c[0] : c[0] + 3, c[1] : c[1] + 3, c[2] : c[2] + 3] = 1
    images = rng.normal(0, 0.3, size=(n, 1, size, size, size)).astype(np.float32) + labels[:, None] * 2
    return ArrayData(images, labels, [f"c{i}" for i in range(n)], [f"p{i}" for i in range(n)])


def _dice(outputs: np.ndarray, val: ArrayData) -> tuple[float, dict]:
    inter = float(((outputs == 1) & (val.labels == 1)).sum())
    d = 2 * inter / max(1.0, float((outputs == 1).sum() + (val.labels == 1).sum()))
    return d, {"dice": d}


def test_patch_training_learns_and_predicts_whole_volumes() -> None:
    from monai.networks.nets import UNet

    data = _toy_seg()
    seed_everything(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    settings = FitSettings(
        problem="segmentation",
        n_classes=2,
        epochs=8,
        batch_size=2,
        lr=0.02,
        loss="dice_ce",
        seed=0,
        device="cpu",
        augment=False,
        divisor=(2, 2, 2),
        patch=(8, 8, 8),
        schedule="cosine",
    )
    result = fit(net, data, data, settings, _dice)
    assert result.best_outputs is not None and result.best_outputs.shape == (6, 12, 12, 12)  # whole volumes
    assert result.best_value > 0.5
    masks = predict(
        net,
        data.images,
        problem="segmentation",
        batch_size=2,
        device="cpu",
        divisor=(2, 2, 2),
        patch=(8, 8, 8),
    )
    assert masks.shape == (6, 12, 12, 12) and masks.dtype == np.uint8


def test_full_fidelity_resolves_the_patch(tiny_seg_datalist: Path, tiny_cls_datalist: Path) -> None:
    seg = load_task(tiny_task("segmentation", tiny_seg_datalist, training={"patch": [16, 32, 16]}))
    full = Fidelity.full(seg, (24, 24, 24))
    assert full.patch == (16, 24, 16) and full.net_shape == (16, 24, 16)  # clamped to the volume
    assert full.to_dict()["patch"] == {"size": [16, 24, 16], "overlap": 0.25}
    assert Fidelity.full(seg, (24, 24, 24), patch=[24, 30, 24]).patch is None  # covers the volume: no patches
    assert Fidelity.full(seg, (24, 24, 24), epochs=7).epochs == 7
    cls = load_task(tiny_task("classification", tiny_cls_datalist))
    with pytest.raises(ConfigError, match="training.patch"):
        Fidelity.full(cls, (32, 32), patch=[16, 16])
    with pytest.raises(ConfigError, match="3 positive entries"):
        Fidelity.full(seg, (24, 24, 24), patch=[16, 16])


def test_retrain_with_patches_on_tiny_3d(tmp_path: Path, tiny_seg_datalist: Path) -> None:
    from mednas import api

    task = tiny_task(
        "segmentation",
        tiny_seg_datalist,
        search={"n_trials": 1, "spaces": ["unet"]},
        training={"epochs": 2, "patch": [16, 16, 16]},
    )
    api.search(task, run_dir=tmp_path / "run", show_progress=False)
    result = api.retrain(tmp_path / "run", top_k=1, n_resamples=50, seeds=1, show_progress=False)
    rec = result.candidates[0]
    assert rec["state"] == "complete", rec.get("reason")
    assert rec["shape"] == [24, 24, 24] and rec["patch"] == {"size": [16, 16, 16], "overlap": 0.25}
    assert {"dice", "lesion_sensitivity"} <= set(rec["test"]["metrics"])
    assert result.summary["retrain"]["patch"] == {"size": [16, 16, 16], "overlap": 0.25}
    on_disk = json.loads((tmp_path / "run" / "retrain" / str(rec["trial"]) / "metrics.json").read_text())
    assert on_disk["patch"]["size"] == [16, 16, 16]
