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

__all__ = ["EpochResult", "FitResult", "FitSettings", "TrainingDiverged", "fit", "predict", "save_weights", "select_device"]


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


def predict(model: Any, images: np.ndarray, *, problem: str, batch_size: int, device: str, divisor: int | tuple[int, ...] = 1,
            patch: tuple[int, ...] | None = None, overlap: float = 0.25) -> np.ndarray:
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

                    logits = sliding_window_logits(lambda p: _crop(model(_pad(p, divisor)), tuple(p.shape[2:])), x, patch,
                                                   overlap=overlap)
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
    import torch

    from mednas.train._learning import not_learning_reason
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
    class_weights = torch.tensor(settings.class_weights, dtype=torch.float32, device=device) if settings.class_weights else None
    loss_fn = make_loss(settings.loss, settings.problem, settings.n_classes, class_weights)
    use_amp = settings.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n_spatial = train.images.ndim - 2

    history: list[EpochResult] = []
    best_value, best_epoch, best_metrics = -math.inf, 0, {}
    best_state: dict[str, Any] | None = None
    best_outputs: np.ndarray | None = None
    last_outputs: np.ndarray | None = None
    start_epoch = 1
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start_epoch = int(state["epoch"]) + 1
        best_value, best_epoch = float(state["best_value"]), int(state["best_epoch"])
        best_metrics = dict(state.get("best_metrics_json", {}))
        best_state = state.get("best_model")
        history = [EpochResult(**h) for h in state.get("history", [])]
        logger.info("resuming from %s at epoch %d (best %.4f at epoch %d)", ckpt_path, start_epoch, best_value, best_epoch)

    images_t = torch.from_numpy(train.images)
    labels_t = torch.from_numpy(train.labels.astype(np.int64))
    channels_last = device.startswith("cuda") and settings.channels_last and n_spatial == 2
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        # Proxy data is small: keep it on the GPU when it fits (no per-batch copies), else pin it for async copies.
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if images_t.numel() * 4 + labels_t.numel() * 8 < 0.25 * free:
            images_t, labels_t = images_t.to(device), labels_t.to(device)
        else:
            images_t, labels_t = images_t.pin_memory(), labels_t.pin_memory()
    n = len(train)
    bs = max(1, min(settings.batch_size, n))
    sample_weights = _balanced_weights(train, settings.problem) if settings.sampling == "balanced" else None
    t0 = time.perf_counter()
    # A resumed run keeps counting epochs without improvement, and does not train on past an early stop.
    stale = start_epoch - 1 - best_epoch if start_epoch > 1 else 0
    stopped_early = settings.patience is not None and start_epoch > 1 and stale >= settings.patience
    last_epoch = start_epoch - 1 if stopped_early else settings.epochs
    for epoch in range(start_epoch, last_epoch + 1):
        te = time.perf_counter()
        model.train()
        order = torch.multinomial(sample_weights, n, replacement=True, generator=gen) if sample_weights is not None else torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        # Drop a last batch of one: BatchNorm cannot train on it.
        n_batches = max(1, n // bs if n % bs == 1 and n > bs else math.ceil(n / bs))
        for b in range(n_batches):
            idx = order[b * bs : (b + 1) * bs]
            x = images_t[idx]
            y = labels_t[idx]
            if settings.patch is not None and settings.problem == "segmentation":
                from mednas.train._patches import random_patches

                x, y = random_patches(x, y, settings.patch, gen, foreground=settings.patch_foreground)
            if settings.augment:
                x, y = _flip_batch(x, y, gen, settings.problem)
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            if settings.problem == "segmentation":
                x = _pad(x, settings.divisor)
                y = _pad(y[:, None].float(), settings.divisor)[:, 0].long()
                target = y[:, None]
            else:
                target = y
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", enabled=use_amp):
                out = model(x)
            loss = _loss_value(loss_fn, out.float(), target, n_spatial)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss at epoch {epoch} (loss became {loss.item()}, batch {b + 1})")
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        if scheduler is not None:
            scheduler.step()
        train_loss = total / max(1, count)
        outputs = predict(model, val.images, problem=settings.problem, batch_size=bs, device=device, divisor=settings.divisor,
                          patch=settings.patch, overlap=settings.patch_overlap)
        if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
            raise TrainingDiverged(f"non-finite validation output at epoch {epoch} (NaN or infinite probabilities)")
        value, metrics = evaluate(outputs, val)
        value = float(value) if value is not None and np.isfinite(value) else -math.inf
        last_outputs = outputs
        dead = not_learning_reason([h.train_loss for h in history] + [train_loss], [h.value for h in history] + [value],
                                   outputs, settings.problem)
        result = EpochResult(epoch, train_loss, value, metrics, time.perf_counter() - te, not_learning=dead)
        history.append(result)
        improved = value > best_value
        if improved or best_state is None:
            best_value, best_epoch, best_metrics = value, epoch, metrics
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best_outputs = outputs
            stale = 0
        else:
            stale += 1
        if ckpt_path is not None:
            _save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "generator": gen.get_state(),
                    "epoch": epoch,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "best_metrics_json": best_metrics,
                    "best_model": best_state,
                    "history": [h.__dict__ for h in history],
                },
            )
        logger.debug("epoch %d: loss %.4f, objective %.4f (%.1fs)", epoch, train_loss, value, result.seconds)
        if on_epoch is not None:
            on_epoch(result)
        if settings.patience is not None and stale >= settings.patience:
            stopped_early = True
            break
    if best_outputs is None and best_state is not None:
        # Resumed after the best epoch: recompute the validation predictions from the best weights.
        model.load_state_dict(best_state)
        best_outputs = predict(model, val.images, problem=settings.problem, batch_size=bs, device=device, divisor=settings.divisor,
                          patch=settings.patch, overlap=settings.patch_overlap)
    # The whole history and the last predictions (the best epoch's when a resumed run trained no further).
    reason = not_learning_reason([h.train_loss for h in history], [h.value for h in history],
                                 last_outputs if last_outputs is not None else best_outputs, settings.problem)
    return FitResult(
        best_epoch=best_epoch,
        best_value=best_value,
        best_metrics=best_metrics,
        history=history,
        seconds=time.perf_counter() - t0,
        learned=reason is None,
        stopped_early=stopped_early,
        best_state=best_state,
        best_outputs=best_outputs,
        not_learning_reason=reason,
    )
