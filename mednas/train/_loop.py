"""The one training loop: proxy trials and full retraining run through :func:`fit`.

It knows nothing of Optuna: progress goes to an ``on_epoch`` callback (the search adapts it to
``trial.report``/``should_prune``; raising from the callback stops training). Seeds are explicit, AMP is used
on CUDA, checkpoints are atomic and a killed run resumes from its last one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.data import ArrayData

logger = logging.getLogger(__name__)

__all__ = [
    "EpochResult",
    "FitResult",
    "FitSettings",
    "TrainingDiverged",
    "fit",
    "predict",
    "save_weights",
    "select_device",
]


class TrainingDiverged(RuntimeError):
    """The loss (or the validation output) became NaN or infinite; the message says at which epoch."""


@dataclass(frozen=True)
class FitSettings:
    """Everything :func:`fit` needs besides the model and data.

    Args:
        problem: ``"classification"`` or ``"segmentation"``.
        n_classes: Output classes.
        epochs: Maximum epochs.
        batch_size: Batch size.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: Learning rate.
        weight_decay: Weight decay.
        loss: Loss registry key (see :mod:`mednas.train._losses`).
        seed: Seed for weight init, batch order and augmentation.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        augment: Random flips.
        amp: Mixed precision on CUDA.
        grad_clip: Gradient-norm clip (None: off).
        patience: Stop after this many epochs without improvement (None: never).
        schedule: ``"cosine"`` or ``"none"`` learning-rate schedule.
        divisor: Pad inputs so each spatial size is a multiple of this (networks that downsample by it).
        class_weights: Per-class loss weights (classification CE), or None.
        patch: Segmentation: train on one random patch of this spatial size per case and batch, and predict
            by sliding-window inference (None: whole inputs). See :mod:`mednas.train._patches`.
        patch_overlap: Overlap of neighbouring sliding windows (fraction of the patch).
        patch_foreground: Probability that a training patch is centred on a random foreground voxel.
        sampling: ``"uniform"`` (each case once per epoch) or ``"balanced"`` (cases drawn with replacement so
            each class, or cases with and without findings for segmentation, come equally often).
        channels_last: On CUDA, use the channels-last memory format for 2D networks (faster convolutions on
            tensor cores); ignored on the CPU and in 3D.
    """

    problem: str
    n_classes: int
    epochs: int
    batch_size: int
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce"
    seed: int = 0
    device: str = "cpu"
    augment: bool = True
    amp: bool = True
    grad_clip: float | None = 5.0
    patience: int | None = None
    schedule: str = "none"
    divisor: int | tuple[int, ...] = 1
    class_weights: tuple[float, ...] | None = None
    patch: tuple[int, ...] | None = None
    patch_overlap: float = 0.25
    patch_foreground: float = 0.33
    sampling: str = "uniform"
    channels_last: bool = True


@dataclass
class EpochResult:
    """One epoch: training loss, the validation objective and its metrics, time taken.

    ``not_learning`` is the reason the run has not started learning as of this epoch (see
    :func:`mednas.train.not_learning_reason`), or None; callers decide whether to stop on it.
    """

    epoch: int
    train_loss: float
    value: float
    metrics: dict[str, Any]
    seconds: float
    not_learning: str | None = None


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Args:
        best_epoch: Epoch (1-based) with the best validation objective.
        best_value: That objective.
        best_metrics: Metrics at that epoch.
        history: Every epoch.
        seconds: Wall time of training and validation.
        learned: False when the run never started learning (``not_learning_reason`` says why): flagged, not ranked.
        stopped_early: Patience ran out.
        best_state: ``state_dict`` at the best epoch (CPU tensors).
        best_outputs: Validation predictions at the best epoch (probabilities ``(N, C)`` or masks ``(N, *S)``).
        not_learning_reason: Why the run counts as not learning, judged on the whole history and the last
            epoch's predictions by :func:`mednas.train.not_learning_reason`; None when ``learned``.
    """

    best_epoch: int
    best_value: float
    best_metrics: dict[str, Any]
    history: list[EpochResult]
    seconds: float
    learned: bool
    stopped_early: bool = False
    best_state: dict[str, Any] | None = field(default=None, repr=False)
    best_outputs: np.ndarray | None = field(default=None, repr=False)
    not_learning_reason: str | None = None


def select_device(device: str = "auto") -> str:
    """Return ``"cuda"`` when asked for ``auto`` and CUDA is available, else the requested device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from mednas.errors import MednasError

        raise MednasError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
    return device


def _pad_amounts(shape: tuple[int, ...], divisor: int | tuple[int, ...]) -> list[int]:
    # F.pad takes (last-dim-left, last-dim-right, ..., first-dim-right): pad at the end of each axis.
    divisors = (divisor,) * len(shape) if isinstance(divisor, int) else tuple(divisor)
    pads: list[int] = []
    for size, k in zip(reversed(shape), reversed(divisors)):
        pads.extend([0, (-size) % max(1, int(k))])
    return pads


def _pad(x: Any, divisor: int | tuple[int, ...]) -> Any:
    import torch.nn.functional as F

    if divisor == 1 or (not isinstance(divisor, int) and all(int(k) <= 1 for k in divisor)):
        return x
    pads = _pad_amounts(tuple(x.shape[2:]), divisor)
    return F.pad(x, pads) if any(pads) else x


def _crop(y: Any, shape: tuple[int, ...]) -> Any:
    if tuple(y.shape[-len(shape) :]) == shape:
        return y
    index = (Ellipsis, *[slice(0, s) for s in shape])
    return y[index]


def predict(
    model: Any,
    images: np.ndarray,
    *,
    problem: str,
    batch_size: int,
    device: str,
    divisor: int | tuple[int, ...] = 1,
    patch: tuple[int, ...] | None = None,
    overlap: float = 0.25,
) -> np.ndarray:
    """Run the model in eval mode.

    Args:
        images: ``(N, C, *spatial)`` float32.
        patch: Segmentation: sliding-window inference with windows of this size (None: whole inputs).
        overlap: Overlap of neighbouring windows.

    Returns:
        Classification: class probabilities ``(N, n_classes)``; segmentation: label maps ``(N, *spatial)`` uint8.
    """
    import torch

    model.eval()
    outs = []
    spatial = tuple(images.shape[2:])
    amp = device.startswith("cuda")
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", enabled=amp):
                if patch is not None and problem == "segmentation":
                    from mednas.train._patches import sliding_window_logits

                    logits = sliding_window_logits(
                        lambda p: _crop(model(_pad(p, divisor)), tuple(p.shape[2:])),
                        x,
                        patch,
                        overlap=overlap,
                    )
                else:
                    logits = model(_pad(x, divisor))
            logits = logits.float()
            if problem == "classification":
                outs.append(torch.softmax(logits, dim=1).cpu().numpy())
            else:
                outs.append(_crop(logits, spatial).argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def _flip_batch(x: Any, y: Any, gen: Any, problem: str) -> tuple[Any, Any]:
    import torch

    spatial_axes = list(range(2, x.ndim))
    for axis in spatial_axes:
        if torch.rand((), generator=gen).item() < 0.5:
            x = x.flip(axis)
            if problem == "segmentation":
                y = y.flip(axis - 1)
    return x, y


def _balanced_weights(train: ArrayData, problem: str) -> Any:
    """Per-case sampling weights that make each class (or finding / no finding) equally likely."""
    import torch

    if problem == "classification":
        groups = train.labels.astype(np.int64)
    else:
        groups = (train.labels.reshape(len(train), -1) > 0).any(axis=1).astype(np.int64)
    counts = np.bincount(groups)
    weights = 1.0 / counts[groups]
    return torch.as_tensor(weights, dtype=torch.float64)


def _make_optimizer(model: Any, s: FitSettings) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=0.9, nesterov=True, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _loss_value(loss_fn: Any, out: Any, y: Any, n_spatial: int) -> Any:
    # DynUNet with deep supervision returns (B, heads, C, *S) in training: weight heads 1, 1/2, 1/4, ...
    if n_spatial and out.ndim == n_spatial + 3:
        heads = out.unbind(dim=1)
        weights = [0.5**i for i in range(len(heads))]
        return sum(w * loss_fn(h, y) for w, h in zip(weights, heads)) / sum(weights)
    return loss_fn(out, y)


def save_weights(path: str | os.PathLike[str], state_dict: dict[str, Any]) -> Path:
    """Write a ``state_dict`` atomically (``torch.save``; load it with ``torch.load(..., weights_only=True)``)."""
    _save_checkpoint(Path(path), state_dict)
    return Path(path)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import tempfile

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _Trainer:
    """What one :func:`fit` call trains with: built once, restored from a checkpoint on resume."""

    model: Any
    settings: FitSettings
    optimizer: Any
    scheduler: Any
    gen: Any
    scaler: Any
    loss_fn: Any
    use_amp: bool
    n_spatial: int
    channels_last: bool = False


@dataclass
class _Best:
    """The best epoch so far: its objective, metrics, weights (CPU) and validation predictions."""

    value: float = -math.inf
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    outputs: np.ndarray | None = None

    def offer(
        self, value: float, epoch: int, metrics: dict[str, Any], model: Any, outputs: np.ndarray
    ) -> bool:
        """Keep this epoch when it beats the best (or is the first); return whether it did."""
        if value > self.value or self.state is None:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.value, self.epoch, self.metrics, self.state, self.outputs = (
                value,
                epoch,
                metrics,
                state,
                outputs,
            )
            return True
        return False


def _resume_point(settings: FitSettings, start_epoch: int, best_epoch: int) -> tuple[int, bool, int]:
    """Epochs without improvement so far, whether patience already ran out, and the last epoch to train."""
    # A resumed run keeps counting epochs without improvement, and does not train on past an early stop.
    stale = start_epoch - 1 - best_epoch if start_epoch > 1 else 0
    stopped_early = settings.patience is not None and start_epoch > 1 and stale >= settings.patience
    last_epoch = start_epoch - 1 if stopped_early else settings.epochs
    return stale, stopped_early, last_epoch


def _make_trainer(model: Any, settings: FitSettings, n_spatial: int) -> _Trainer:
    """Move ``model`` to the device and build its optimizer, schedule, generator, scaler and loss."""
    import torch

    from mednas.train._losses import make_loss

    device = settings.device
    model.to(device)
    gen = torch.Generator().manual_seed(int(settings.seed))
    optimizer = _make_optimizer(model, settings)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, settings.epochs))
        if settings.schedule == "cosine"
        else None
    )
    class_weights = (
        torch.tensor(settings.class_weights, dtype=torch.float32, device=device)
        if settings.class_weights
        else None
    )
    loss_fn = make_loss(settings.loss, settings.problem, settings.n_classes, class_weights)
    use_amp = settings.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return _Trainer(model, settings, optimizer, scheduler, gen, scaler, loss_fn, use_amp, n_spatial)


def _resume(t: _Trainer, best: _Best, ckpt_path: Path) -> tuple[int, list[EpochResult]]:
    """Restore ``t`` and ``best`` from the checkpoint; return the epoch to start at and the history so far."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state.get("scheduler"):
        t.scheduler.load_state_dict(state["scheduler"])
    t.gen.set_state(state["generator"])
    start_epoch = int(state["epoch"]) + 1
    best.value, best.epoch = float(state["best_value"]), int(state["best_epoch"])
    best.metrics = dict(state.get("best_metrics_json", {}))
    best.state = state.get("best_model")
    history = [EpochResult(**h) for h in state.get("history", [])]
    logger.info(
        "resuming from %s at epoch %d (best %.4f at epoch %d)", ckpt_path, start_epoch, best.value, best.epoch
    )
    return start_epoch, history


def _training_tensors(t: _Trainer, train: ArrayData) -> tuple[Any, Any]:
    """The training images and labels as tensors, on the GPU when they fit (or pinned); sets channels-last."""
    import torch

    device = t.settings.device
    images_t = torch.from_numpy(train.images)
    labels_t = torch.from_numpy(train.labels.astype(np.int64))
    t.channels_last = device.startswith("cuda") and t.settings.channels_last and t.n_spatial == 2
    if t.channels_last:
        t.model.to(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        # Proxy data is small: keep it on the GPU when it fits (no per-batch copies), else pin it for async copies.
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if images_t.numel() * 4 + labels_t.numel() * 8 < 0.25 * free:
            images_t, labels_t = images_t.to(device), labels_t.to(device)
        else:
            images_t, labels_t = images_t.pin_memory(), labels_t.pin_memory()
    return images_t, labels_t


def _batch(t: _Trainer, images_t: Any, labels_t: Any, idx: Any) -> tuple[Any, Any]:
    """One training batch: patches, flips, device copy and padding; returns the input and the loss target."""
    import torch

    s = t.settings
    x = images_t[idx]
    y = labels_t[idx]
    if s.patch is not None and s.problem == "segmentation":
        from mednas.train._patches import random_patches

        x, y = random_patches(x, y, s.patch, t.gen, foreground=s.patch_foreground)
    if s.augment:
        x, y = _flip_batch(x, y, t.gen, s.problem)
    x = x.to(s.device, non_blocking=True)
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(s.device, non_blocking=True)
    if s.problem == "segmentation":
        x = _pad(x, s.divisor)
        y = _pad(y[:, None].float(), s.divisor)[:, 0].long()
        return x, y[:, None]
    return x, y


def _train_epoch(
    t: _Trainer, images_t: Any, labels_t: Any, sample_weights: Any, n: int, bs: int, epoch: int
) -> float:
    """Train one epoch on the ``n`` cases (then step the schedule); return the mean training loss per case."""
    import torch

    s = t.settings
    t.model.train()
    order = (
        torch.multinomial(sample_weights, n, replacement=True, generator=t.gen)
        if sample_weights is not None
        else torch.randperm(n, generator=t.gen)
    )
    total, count = 0.0, 0
    # Drop a last batch of one: BatchNorm cannot train on it.
    n_batches = max(1, n // bs if n % bs == 1 and n > bs else math.ceil(n / bs))
    for b in range(n_batches):
        idx = order[b * bs : (b + 1) * bs]
        x, target = _batch(t, images_t, labels_t, idx)
        t.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", enabled=t.use_amp):
            out = t.model(x)
        loss = _loss_value(t.loss_fn, out.float(), target, t.n_spatial)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"non-finite loss at epoch {epoch} (loss became {loss.item()}, batch {b + 1})"
            )
        t.scaler.scale(loss).backward()
        if s.grad_clip:
            t.scaler.unscale_(t.optimizer)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), s.grad_clip)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    if t.scheduler is not None:
        t.scheduler.step()
    return total / max(1, count)


def _predict_val(t: _Trainer, val: ArrayData, bs: int) -> np.ndarray:
    """The model's validation predictions with the loop's settings (see :func:`predict`)."""
    s = t.settings
    return predict(
        t.model,
        val.images,
        problem=s.problem,
        batch_size=bs,
        device=s.device,
        divisor=s.divisor,
        patch=s.patch,
        overlap=s.patch_overlap,
    )


def _validate(
    t: _Trainer,
    val: ArrayData,
    bs: int,
    epoch: int,
    evaluate: Callable[[np.ndarray, ArrayData], tuple[float, dict[str, Any]]],
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Predict ``val`` and score it: the predictions, the objective (-inf when missing or not finite), metrics."""
    outputs = _predict_val(t, val, bs)
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        raise TrainingDiverged(
            f"non-finite validation output at epoch {epoch} (NaN or infinite probabilities)"
        )
    value, metrics = evaluate(outputs, val)
    value = float(value) if value is not None and np.isfinite(value) else -math.inf
    return outputs, value, metrics


def _restore_best_outputs(t: _Trainer, best: _Best, val: ArrayData, bs: int) -> None:
    """Resumed after the best epoch: load the best weights and recompute their validation predictions."""
    t.model.load_state_dict(best.state)
    best.outputs = _predict_val(t, val, bs)


def _write_checkpoint(path: Path, t: _Trainer, epoch: int, best: _Best, history: list[EpochResult]) -> None:
    _save_checkpoint(
        path,
        {
            "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
            "generator": t.gen.get_state(),
            "epoch": epoch,
            "best_value": best.value,
            "best_epoch": best.epoch,
            "best_metrics_json": best.metrics,
            "best_model": best.state,
            "history": [h.__dict__ for h in history],
        },
    )


def fit(
    model: Any,
    train: ArrayData,
    val: ArrayData,
    settings: FitSettings,
    evaluate: Callable[[np.ndarray, ArrayData], tuple[float, dict[str, Any]]],
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, evaluating the objective on ``val`` after every epoch.

    Args:
        model: A freshly built network (weights are re-seeded here for reproducibility only through
            ``settings.seed`` having been used to seed torch before it was built).
        train: Training arrays.
        val: Validation arrays.
        settings: Loop settings.
        evaluate: ``(predictions, val) -> (objective, metrics)``; higher objective is better.
        on_epoch: Called after each epoch; may raise (e.g. ``optuna.TrialPruned``) to stop training.
        checkpoint: File for an atomic per-epoch checkpoint; when it exists, training resumes from it.

    Returns:
        The best epoch's value, metrics, weights and validation predictions, and the history.

    Raises:
        TrainingDiverged: When the loss becomes NaN or infinite.
    """
    from mednas.train._learning import not_learning_reason

    t = _make_trainer(model, settings, n_spatial=train.images.ndim - 2)
    history: list[EpochResult] = []
    best = _Best()
    last_outputs: np.ndarray | None = None
    start_epoch = 1
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and ckpt_path.exists():
        start_epoch, history = _resume(t, best, ckpt_path)
    images_t, labels_t = _training_tensors(t, train)
    n = len(train)
    bs = max(1, min(settings.batch_size, n))
    sample_weights = _balanced_weights(train, settings.problem) if settings.sampling == "balanced" else None
    t0 = time.perf_counter()
    stale, stopped_early, last_epoch = _resume_point(settings, start_epoch, best.epoch)
    for epoch in range(start_epoch, last_epoch + 1):
        te = time.perf_counter()
        train_loss = _train_epoch(t, images_t, labels_t, sample_weights, n, bs, epoch)
        outputs, value, metrics = _validate(t, val, bs, epoch, evaluate)
        last_outputs = outputs
        dead = not_learning_reason(
            [h.train_loss for h in history] + [train_loss],
            [h.value for h in history] + [value],
            outputs,
            settings.problem,
        )
        result = EpochResult(epoch, train_loss, value, metrics, time.perf_counter() - te, not_learning=dead)
        history.append(result)
        stale = 0 if best.offer(value, epoch, metrics, model, outputs) else stale + 1
        if ckpt_path is not None:
            _write_checkpoint(ckpt_path, t, epoch, best, history)
        logger.debug("epoch %d: loss %.4f, objective %.4f (%.1fs)", epoch, train_loss, value, result.seconds)
        if on_epoch is not None:
            on_epoch(result)
        if settings.patience is not None and stale >= settings.patience:
            stopped_early = True
            break
    return _fit_result(t, best, history, val, bs, last_outputs, t0, stopped_early)


def _fit_result(
    t: _Trainer,
    best: _Best,
    history: list[EpochResult],
    val: ArrayData,
    bs: int,
    last_outputs: np.ndarray | None,
    t0: float,
    stopped_early: bool,
) -> FitResult:
    """What :func:`fit` returns: the best epoch (its predictions recomputed after a resume) and the history.

    ``t0`` is the ``time.perf_counter()`` at which training started.
    """
    from mednas.train._learning import not_learning_reason

    if best.outputs is None and best.state is not None:
        _restore_best_outputs(t, best, val, bs)
    # The whole history and the last predictions (the best epoch's when a resumed run trained no further).
    reason = not_learning_reason(
        [h.train_loss for h in history],
        [h.value for h in history],
        last_outputs if last_outputs is not None else best.outputs,
        t.settings.problem,
    )
    return FitResult(
        best_epoch=best.epoch,
        best_value=best.value,
        best_metrics=best.metrics,
        history=history,
        seconds=time.perf_counter() - t0,
        learned=reason is None,
        stopped_early=stopped_early,
        best_state=best.state,
        best_outputs=best.outputs,
        not_learning_reason=reason,
    )
