"""The one training loop for proxy and full training, the one candidate trainer, losses, seeding and devices."""

from __future__ import annotations

from mednas.train._candidate import (
    PATCH_OVERLAP,
    Fidelity,
    TrainedCandidate,
    candidate_settings,
    class_weights_for,
    space_context,
    space_for,
    suggest_imbalance,
    train_candidate,
)
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
from mednas.train._losses import LOSSES, BaseLoss, list_losses, make_loss, register_loss
from mednas.train._seed import derive_seed, seed_everything

__all__ = [
    "PATCH_OVERLAP",
    "EpochResult",
    "Fidelity",
    "FitResult",
    "FitSettings",
    "TrainedCandidate",
    "TrainingDiverged",
    "candidate_settings",
    "class_weights_for",
    "degenerate_predictions",
    "derive_seed",
    "fit",
    "make_loss",
    "not_learning_reason",
    "predict",
    "save_weights",
    "seed_everything",
    "select_device",
    "space_context",
    "space_for",
    "suggest_imbalance",
    "train_candidate",
    "BaseLoss",
    "LOSSES",
    "list_losses",
    "register_loss",
]
