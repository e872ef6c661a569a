"""The one training loop for proxy and full training, losses, seeding and device selection."""

from __future__ import annotations

from mednas.train._loop import (
    EpochResult,
    FitResult,
    FitSettings,
    TrainingDiverged,
    fit,
    predict,
    save_weights,
    select_device,
)
from mednas.train._losses import make_loss
from mednas.train._seed import derive_seed, seed_everything

__all__ = [
    "EpochResult",
    "FitResult",
    "FitSettings",
    "TrainingDiverged",
    "derive_seed",
    "fit",
    "make_loss",
    "predict",
    "save_weights",
    "seed_everything",
    "select_device",
]
