"""The one training loop: learns, reports per epoch, stops on NaN, pads for divisors, resumes from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mednas.data import ArrayData
from mednas.train import FitSettings, TrainingDiverged, derive_seed, fit, predict, seed_everything


def _toy_cls(n: int = 48, size: int = 12, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0, 0.3, size=(n, 1, size, size)).astype(np.float32)
    images[labels == 1, :, 3:8, 3:8] += 1.5
    return ArrayData(
        images, labels.astype(np.int64), [f"c{i}" for i in range(n)], [f"p{i}" for i in range(n)]
    )


def _toy_seg(n: int = 6, size: int = 10, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size, size), np.uint8)
    labels[:, 2:6, 2:6, 2:6] = 1
    images = rng.normal(0, 0.3, size=(n, 1, size, size, size)).astype(np.float32) + labels[:, None] * 2
    return ArrayData(images, labels, [f"c{i}" for i in range(n)], [f"p{i}" for i in range(n)])


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )


def _acc(outputs: np.ndarray, val: ArrayData) -> tuple[float, dict]:
    acc = float((outputs.argmax(1) == val.labels).mean())
    return acc, {"accuracy": acc}


def _settings(**kw) -> FitSettings:
    base = dict(
        problem="classification",
        n_classes=2,
        epochs=8,
        batch_size=8,
        lr=0.05,
        seed=1,
        device="cpu",
        augment=False,
        loss="ce",
    )
    base.update(kw)
    return FitSettings(**base)


def test_fit_learns_and_reports_every_epoch() -> None:
    data = _toy_cls()
    seen: list[int] = []
    seed_everything(0)
    result = fit(_net(), data, data, _settings(), _acc, on_epoch=lambda r: seen.append(r.epoch))
    assert seen == list(range(1, 9))
    assert result.best_value >= 0.9
    assert result.learned
    assert result.best_outputs is not None and result.best_outputs.shape == (48, 2)
    assert np.allclose(result.best_outputs.sum(1), 1.0, atol=1e-5)


def test_same_seed_same_result() -> None:
    data = _toy_cls()
    values = []
    for _ in range(2):
        seed_everything(3)
        values.append(
            [h.train_loss for h in fit(_net(), data, data, _settings(epochs=3, augment=True), _acc).history]
        )
    assert values[0] == values[1]


def test_callback_exception_stops_training() -> None:
    class Stop(Exception):
        pass

    def on_epoch(result):  # noqa: ANN001
        if result.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(_net(), _toy_cls(), _toy_cls(), _settings(), _acc, on_epoch=on_epoch)


def test_nan_loss_raises_diverged() -> None:
    data = _toy_cls()
    data.images[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1 \(loss became nan"):
        fit(_net(), data, data, _settings(batch_size=48), _acc)


def test_nan_validation_output_raises_diverged() -> None:
    """Weights that turn NaN leave a finite-looking loss nowhere to hide: validation probabilities are checked too."""
    import torch

    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    data = _toy_cls()
    with pytest.raises(TrainingDiverged, match="non-finite"):
        fit(net, data, data, _settings(batch_size=48, lr=0.0), _acc)


def test_never_learning_candidate_is_flagged() -> None:
    data = _toy_cls()
    result = fit(_net(), data, data, _settings(lr=0.0, epochs=3), _acc)
    assert not result.learned


def test_segmentation_with_divisor_padding_and_deep_supervision() -> None:
    from monai.networks.nets import DynUNet

    data = _toy_seg()
    net = DynUNet(
        3,
        1,
        2,
        kernel_size=[3, 3, 3],
        strides=[1, 2, 2],
        upsample_kernel_size=[2, 2],
        filters=[4, 8, 8],
        deep_supervision=True,
        deep_supr_num=1,
    )

    def dice(outputs: np.ndarray, val: ArrayData) -> tuple[float, dict]:
        inter = float(((outputs == 1) & (val.labels == 1)).sum())
        d = 2 * inter / max(1.0, float((outputs == 1).sum() + (val.labels == 1).sum()))
        return d, {"dice": d}

    s = _settings(problem="segmentation", epochs=6, batch_size=2, lr=0.02, loss="dice_ce", divisor=(4, 4, 4))
    result = fit(net, data, data, s, dice)
    assert result.best_outputs.shape == (6, 10, 10, 10)  # cropped back from the padded 12^3
    assert result.best_value > 0.5


def test_checkpoint_resume_continues_not_restarts(tmp_path: Path) -> None:
    data = _toy_cls()
    ckpt = tmp_path / "ckpt.pt"

    class Killed(Exception):
        pass

    def kill_at_3(result):  # noqa: ANN001
        if result.epoch == 3:
            raise Killed

    seed_everything(0)
    with pytest.raises(Killed):
        fit(_net(), data, data, _settings(epochs=6), _acc, on_epoch=kill_at_3, checkpoint=ckpt)
    assert ckpt.exists()
    epochs: list[int] = []
    seed_everything(0)
    resumed = fit(
        _net(),
        data,
        data,
        _settings(epochs=6),
        _acc,
        on_epoch=lambda r: epochs.append(r.epoch),
        checkpoint=ckpt,
    )
    assert epochs == [4, 5, 6]
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    seed_everything(0)
    straight = fit(_net(), data, data, _settings(epochs=6), _acc)
    assert np.allclose(
        [h.train_loss for h in resumed.history], [h.train_loss for h in straight.history], rtol=1e-4
    )


def test_predict_shapes() -> None:
    out = predict(_net(), _toy_cls(n=5).images, problem="classification", batch_size=2, device="cpu")
    assert out.shape == (5, 2)


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(100)}) == 100
