"""The one training loop for proxy and full training, losses, seeding and device selection."""

from __future__ import annotations

from mednas.train._learning import degenerate_predictions, not_learning_reason
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
    "degenerate_predictions",
    "derive_seed",
    "fit",
    "make_loss",
    "not_learning_reason",
    "predict",
    "save_weights",
    "seed_everything",
    "select_device",
]
