"""Full-fidelity training of one spec: the settings retraining and proxy calibration share.

Full fidelity is the task's full input shape (or random patches of ``training.patch`` with sliding-window
validation), ``training.epochs`` with early stopping after ``training.patience`` epochs without improvement of
the validation objective, and a cosine learning-rate schedule; the proxy is the same loop at a smaller shape,
fewer epochs, a constant learning rate and no early stopping (as in the search).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.config import TaskConfig
from mednas.data import ArrayData
from mednas.errors import ConfigError

__all__ = ["PATCH_OVERLAP", "FullFidelity", "fit_spec", "full_fidelity", "space_for"]

PATCH_OVERLAP = 0.25


@dataclass(frozen=True)
class FullFidelity:
    """What "full fidelity" means for a task: shape, optional patch, epoch budget and patience.

    Args:
        shape: Full spatial input shape.
        patch: Patch size for patch training with sliding-window inference, or None (whole inputs).
        epochs: Maximum epochs.
        patience: Early-stopping patience (epochs without improvement on validation).
    """

    shape: tuple[int, ...]
    patch: tuple[int, ...] | None
    epochs: int
    patience: int

    @property
    def net_shape(self) -> tuple[int, ...]:
        """The spatial shape the network sees: the patch, or the full shape."""
        return self.patch or self.shape

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form recorded in ``retrain/<n>/metrics.json``."""
        return {
            "shape": list(self.shape),
            "patch": {"size": list(self.patch), "overlap": PATCH_OVERLAP} if self.patch else None,
            "max_epochs": self.epochs,
            "patience": self.patience,
        }


def full_fidelity(
    task: TaskConfig, shape: Sequence[int], *, epochs: int | None = None, patch: Sequence[int] | None = None
) -> FullFidelity:
    """Resolve the full-fidelity settings of ``task`` at ``shape`` (``patch`` and ``epochs`` override the task's).

    A patch that covers the whole input on every axis is dropped (whole volumes fit); axes where the patch is
    larger than the input are clamped to it.

    Raises:
        ConfigError: For a patch on a classification task or with the wrong number of axes.
    """
    shape = tuple(int(s) for s in shape)
    size = tuple(int(p) for p in patch) if patch is not None else (tuple(task.training.patch) if task.training.patch else None)
    if size is not None:
        if task.problem != "segmentation":
            raise ConfigError("training.patch: patch training is for segmentation; a classifier sees the whole image")
        if len(size) != len(shape) or any(p < 1 for p in size):
            raise ConfigError(f"training.patch {list(size)} must have {len(shape)} positive entries")
        size = tuple(min(p, s) for p, s in zip(size, shape))
        if size == shape:
            size = None
    return FullFidelity(shape, size, int(epochs or task.training.epochs), int(task.training.patience))


def space_for(task: TaskConfig, family: str) -> Any:
    """The task's search space of ``family`` (with its ``space_options``)."""
    from mednas.spaces import create_space

    return create_space(family, **task.search.space_options.get(family, {}))


def fit_spec(
    task: TaskConfig,
    spec: Any,
    train: ArrayData,
    val: ArrayData,
    *,
    shape: Sequence[int],
    epochs: int,
    seed: int,
    device: str,
    full: FullFidelity | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[Any], None] | None = None,
    loss: str | None = None,
    sampling: str | None = None,
) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """Train ``spec`` at one fidelity and return ``(fit result, model with best weights, adapted spec, divisor)``.

    Args:
        task: The task (loss, optimiser, batch size, objective).
        spec: The sampled :class:`~mednas.spec.ArchSpec`.
        train: Training arrays at ``shape``.
        val: Validation arrays at ``shape``.
        shape: Spatial input shape of ``train``/``val``.
        epochs: Epochs (the proxy's, or full fidelity's maximum).
        seed: Seeds weight initialisation, batch order and patches.
        device: Torch device.
        full: Full-fidelity settings (cosine schedule, patience, patches); None trains like a proxy trial
            (constant learning rate, no early stopping).
        checkpoint: Per-epoch checkpoint to resume from and write.
        on_epoch: Called with each :class:`~mednas.train.EpochResult`.
        loss: Loss registry key (default: ``training.loss``; the search may have sampled another).
        sampling: ``uniform`` or ``balanced`` batches (default: ``training.sampling``).
    """
    from mednas.metrics._objective import evaluate_objective
    from mednas.spec import build
    from mednas.study import class_weights_for
    from mednas.train import FitSettings, fit, seed_everything

    space = space_for(task, spec.family)
    net_shape = full.net_shape if full is not None else tuple(int(s) for s in shape)
    adapted = space.adapt_to_shape(spec, net_shape)
    divisor = tuple(int(k) for k in space.required_divisor(adapted))
    settings = FitSettings(
        problem=task.problem,
        n_classes=task.n_classes,
        epochs=epochs,
        batch_size=task.training.batch_size,
        optimizer=task.training.optimizer,
        lr=task.training.lr,
        weight_decay=task.training.weight_decay,
        loss=loss or task.training.loss,
        seed=seed,
        device=device,
        augment=task.training.augment,
        amp=task.training.amp,
        grad_clip=task.training.grad_clip,
        patience=full.patience if full is not None else None,
        schedule="cosine" if full is not None else "none",
        divisor=divisor,
        class_weights=class_weights_for(task, train.labels),
        patch=full.patch if full is not None else None,
        patch_overlap=PATCH_OVERLAP,
        sampling=sampling or task.training.sampling,
    )

    def evaluate(outputs: np.ndarray, data: ArrayData) -> tuple[float, dict[str, Any]]:
        return evaluate_objective(task, outputs, data)

    seed_everything(seed)
    model = build(adapted)
    result = fit(model, train, val, settings, evaluate, on_epoch=on_epoch, checkpoint=checkpoint)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result, model, adapted, divisor
