"""One candidate trainer: a spec at a fidelity with a seed becomes fit settings, then a trained network.

The search's trials, their re-evaluation with extra seeds, full-fidelity retraining and proxy calibration all
train through :func:`train_candidate`, so calibration measures exactly the proxy training the search runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mednas.config import TaskConfig
from mednas.data import ArrayData
from mednas.errors import ConfigError
from mednas.train._loop import EpochResult, FitResult, FitSettings

if TYPE_CHECKING:
    import torch

    from mednas.data import DataPlan
    from mednas.spaces import BaseSearchSpace, SpaceContext, TrialLike
    from mednas.spec import ArchSpec
    from mednas.train._inherit import Transfer

__all__ = [
    "PATCH_OVERLAP",
    "Fidelity",
    "TrainedCandidate",
    "candidate_settings",
    "class_weights_for",
    "space_context",
    "space_for",
    "suggest_imbalance",
    "train_candidate",
]

#: Overlap of neighbouring sliding windows when a full-fidelity segmentation trains on patches.
PATCH_OVERLAP = 0.25


@dataclass(frozen=True)
class Fidelity:
    """How a candidate is trained: the proxy (the search's) or full fidelity (retraining's).

    The proxy is a smaller input shape, ``proxy.epochs``, optionally a subset of the training patients, a
    constant learning rate and no early stopping. Full fidelity is the full input shape (or random patches with
    sliding-window validation), up to ``training.epochs`` with early stopping after ``training.patience``
    epochs without improvement, and a cosine learning-rate schedule.

    Args:
        kind: ``"proxy"`` or ``"full"``.
        shape: Spatial input shape of the training and validation arrays.
        epochs: Epochs (the proxy's, or full fidelity's maximum).
        subset: Fraction of the training patients kept (the proxy's ``proxy.subset``; 1 at full fidelity).
        patch: Full fidelity: patch size for patch training with sliding-window inference, or None.
        patience: Full fidelity: early-stopping patience; None for the proxy (no early stopping).

    Example:
        >>> Fidelity("proxy", (24, 24), 2).schedule
        'none'
    """

    kind: Literal["proxy", "full"]
    shape: tuple[int, ...]
    epochs: int
    subset: float = 1.0
    patch: tuple[int, ...] | None = None
    patience: int | None = None

    @classmethod
    def proxy(
        cls, task: TaskConfig, shape: Sequence[int], *, epochs: int | None = None, subset: float | None = None
    ) -> Fidelity:
        """The search's proxy at ``shape``: ``proxy.epochs`` and ``proxy.subset`` unless given."""
        return cls(
            "proxy",
            tuple(int(s) for s in shape),
            int(epochs or task.proxy.epochs),
            float(task.proxy.subset if subset is None else subset),
        )

    @classmethod
    def full(
        cls,
        task: TaskConfig,
        shape: Sequence[int],
        *,
        epochs: int | None = None,
        patch: Sequence[int] | None = None,
    ) -> Fidelity:
        """Full fidelity of ``task`` at ``shape`` (``patch`` and ``epochs`` override the task's).

        A patch that covers the whole input on every axis is dropped (whole volumes fit); axes where the patch
        is larger than the input are clamped to it.

        Raises:
            ConfigError: For a patch on a classification task or with the wrong number of axes.
        """
        full_shape = tuple(int(s) for s in shape)
        size = (
            tuple(int(p) for p in patch)
            if patch is not None
            else (tuple(task.training.patch) if task.training.patch else None)
        )
        if size is not None:
            if task.problem != "segmentation":
                raise ConfigError(
                    "training.patch: patch training is for segmentation; a classifier sees the whole image"
                )
            if len(size) != len(full_shape) or any(p < 1 for p in size):
                raise ConfigError(f"training.patch {list(size)} must have {len(full_shape)} positive entries")
            size = tuple(min(p, s) for p, s in zip(size, full_shape))
            if size == full_shape:
                size = None
        return cls(
            "full", full_shape, int(epochs or task.training.epochs), 1.0, size, int(task.training.patience)
        )

    @property
    def net_shape(self) -> tuple[int, ...]:
        """The spatial shape the network sees: the patch, or the whole input."""
        return self.patch or self.shape

    @property
    def schedule(self) -> str:
        """The learning-rate schedule: ``cosine`` at full fidelity, ``none`` (constant) for the proxy."""
        return "cosine" if self.kind == "full" else "none"

    def load(
        self, plan: DataPlan, *, seed: int, progress: Callable[[str, int, int], None] | None = None
    ) -> tuple[ArrayData, ArrayData]:
        """Load the training arrays (``subset`` of the patients, chosen by ``seed``) and validation arrays.

        Args:
            plan: The task's data plan.
            seed: Chooses the training subset (the search's ``search.seed``).
            progress: Called with ``("train" | "val", done, total)`` while cases are preprocessed.
        """

        def tick(split: str) -> Callable[[int, int], None] | None:
            return None if progress is None else (lambda done, total: progress(split, done, total))

        train = plan.arrays("train", self.shape, subset=self.subset, seed=seed, progress=tick("train"))
        val = plan.arrays("val", self.shape, progress=tick("val"))
        return train, val

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form recorded in ``retrain/<n>/metrics.json`` (a proxy adds its ``subset``)."""
        out: dict[str, Any] = {
            "shape": list(self.shape),
            "patch": {"size": list(self.patch), "overlap": PATCH_OVERLAP} if self.patch else None,
            "max_epochs": self.epochs,
            "patience": self.patience,
        }
        if self.kind == "proxy":
            out["subset"] = self.subset
        return out


@dataclass
class TrainedCandidate:
    """What :func:`train_candidate` returns.

    Args:
        result: The training loop's result (history, best epoch and value, best outputs and weights).
        model: The network, with the best epoch's weights loaded.
        spec: The spec as trained: adapted to the fidelity's input shape.
        settings: The fit settings it was trained with.
        transfer: How much of the network started from ``init_state`` (None when it started from its seeded
            initialisation alone).
    """

    result: FitResult
    model: Any = field(repr=False)
    spec: ArchSpec
    settings: FitSettings
    transfer: Transfer | None = None

    @property
    def divisor(self) -> tuple[int, ...]:
        """How far inputs are padded: each spatial size a multiple of this."""
        d = self.settings.divisor
        return tuple(int(k) for k in d) if isinstance(d, tuple) else (int(d),)


def train_candidate(
    task: TaskConfig,
    spec: ArchSpec,
    train: ArrayData,
    val: ArrayData,
    fidelity: Fidelity,
    *,
    seed: int,
    device: str,
    loss: str | None = None,
    sampling: str | None = None,
    batch_size: int | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainedCandidate:
    """Build ``spec`` for the fidelity's input shape, seed everything and train it, scoring every epoch.

    Args:
        task: The task (optimiser, batch size, loss, objective).
        spec: The sampled spec.
        train: Training arrays at ``fidelity.shape`` (see :meth:`Fidelity.load`).
        val: Validation arrays at ``fidelity.shape``.
        fidelity: Proxy or full fidelity.
        seed: Seeds weight initialisation, batch order, augmentation and patches.
        device: Torch device.
        loss: Loss registry key (default: ``training.loss``); ``auto`` is resolved for ``sampling``.
        sampling: ``uniform`` or ``balanced`` batches (default: ``training.sampling``).
        batch_size: Batch size (default: ``training.batch_size``; the search halves it after running out of
            GPU memory).
        checkpoint: Per-epoch checkpoint to resume from and write.
        on_epoch: Called with each :class:`~mednas.train.EpochResult`; raising from it stops training.
        init_state: Weights to start from (a lower rung's, or a parent candidate's), loaded over the seeded
            initialisation with :func:`~mednas.train.transfer_weights`: whole where shapes match, overlapping
            slices where sizes differ. A ``checkpoint`` that exists still wins (it resumes this training).

    Returns:
        The fit result, the network with its best weights, the adapted spec, the settings and the
        :class:`~mednas.train.Transfer` from ``init_state`` (None without one).

    Example:
        >>> trained = train_candidate(task, spec, train, val, Fidelity.proxy(task, (24, 24)), seed=1,
        ...                           device="cpu")  # doctest: +SKIP
        >>> trained.result.best_value  # doctest: +SKIP
    """
    from mednas.spec import build

    # Looked up on the package at call time, so that a wrapper of mednas.train.fit (tests, benchmarks) sees it.
    from mednas.train import fit, seed_everything
    from mednas.train._inherit import transfer_weights

    space = space_for(task, spec.family)
    adapted = space.adapt_to_shape(spec, fidelity.net_shape)
    settings = candidate_settings(
        task,
        fidelity,
        seed=seed,
        device=device,
        loss=loss,
        sampling=sampling,
        divisor=space.required_divisor(adapted),
        class_weights=class_weights_for(task, train.labels),
        batch_size=batch_size,
    )

    def evaluate(outputs: np.ndarray, data: ArrayData) -> tuple[float, dict[str, Any]]:
        from mednas.metrics._objective import evaluate_objective

        return evaluate_objective(task, outputs, data)

    seed_everything(seed)
    model = build(adapted)
    transfer = None if init_state is None else transfer_weights(init_state, model)
    result = fit(model, train, val, settings, evaluate, on_epoch=on_epoch, checkpoint=checkpoint)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return TrainedCandidate(result, model, adapted, settings, transfer)


def candidate_settings(
    task: TaskConfig,
    fidelity: Fidelity,
    *,
    seed: int,
    device: str,
    divisor: Sequence[int],
    class_weights: tuple[float, ...] | None,
    loss: str | None = None,
    sampling: str | None = None,
    batch_size: int | None = None,
) -> FitSettings:
    """The :class:`~mednas.train.FitSettings` of one candidate at one fidelity (see :func:`train_candidate`)."""
    from mednas.train._losses import resolve_loss

    sampling = sampling or task.training.sampling
    t = task.training
    return FitSettings(
        problem=task.problem,
        n_classes=task.n_classes,
        epochs=fidelity.epochs,
        batch_size=batch_size or t.batch_size,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        loss=resolve_loss(loss or t.loss, task.problem, sampling),
        seed=seed,
        device=device,
        augment=t.augment,
        amp=t.amp,
        grad_clip=t.grad_clip,
        patience=fidelity.patience,
        schedule=fidelity.schedule,
        divisor=tuple(int(k) for k in divisor),
        class_weights=class_weights,
        patch=fidelity.patch,
        patch_overlap=PATCH_OVERLAP,
        sampling=sampling,
    )


def class_weights_for(task: TaskConfig, labels: np.ndarray) -> tuple[float, ...] | None:
    """Inverse-frequency class weights for classification (normalised to mean 1), None for segmentation."""
    if task.problem != "classification":
        return None
    counts = np.bincount(labels.astype(np.int64), minlength=task.n_classes).astype(float)
    counts[counts == 0] = 1.0
    w = counts.sum() / (len(counts) * counts)
    return tuple(float(v) for v in w / w.mean())


def suggest_imbalance(trial: TrialLike, task: TaskConfig) -> tuple[str, str]:
    """Sample a candidate's loss and batch sampling: a class-weighted loss, balanced sampling, or neither.

    ``search.losses`` and ``search.sampling`` are searched when set (else ``training.loss``/``training.sampling``).
    For classification, a trial whose loss is class-weighted (``weighted_ce``, ``focal``, or ``auto`` with uniform
    batches) trains with uniform batches and ``sampling`` is not suggested for it (a conditional parameter), so the
    two remedies are never stacked, unless ``training.stack_imbalance_remedies`` is true. ``auto`` becomes plain
    cross-entropy under balanced sampling (see :func:`mednas.train._losses.resolve_loss`).

    Returns:
        ``(loss, sampling)``, the loss resolved (never ``auto`` for classification).
    """
    from mednas.train._losses import is_class_weighted, resolve_loss

    loss = (
        trial.suggest_categorical("loss", list(task.search.losses))
        if task.search.losses
        else task.training.loss
    )
    stack = task.training.stack_imbalance_remedies or task.problem != "classification"
    # A class-weighted loss (built-in, or a plugin loss that declares `class_weighted`) is a remedy of its own.
    if task.search.sampling and (stack or not is_class_weighted(loss, task.problem, "balanced")):
        sampling = trial.suggest_categorical("sampling", list(task.search.sampling))
    elif task.search.sampling:
        sampling = "uniform"  # the weighted loss is this trial's remedy
    else:
        sampling = task.training.sampling
    return resolve_loss(loss, task.problem, sampling), sampling


def space_for(task: TaskConfig, family: str) -> BaseSearchSpace:
    """The task's search space of ``family``, with its ``search.space_options``."""
    from mednas.spaces import create_space

    return create_space(family, **task.search.space_options.get(family, {}))


def space_context(task: TaskConfig, shape: Sequence[int], full_shape: Sequence[int]) -> SpaceContext:
    """The :class:`~mednas.spaces.SpaceContext` for sampling the task's candidates at ``shape``."""
    from mednas.spaces import SpaceContext

    return SpaceContext(
        problem=task.problem,
        spatial_dims=task.spatial_dims,
        in_channels=task.in_channels,
        out_channels=task.n_classes,
        input_shape=tuple(int(s) for s in shape),
        full_shape=tuple(int(s) for s in full_shape),
    )
