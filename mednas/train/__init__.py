"""The one training loop for proxy and full training, the one candidate trainer, losses, seeding, devices and
carrying weights between shapes and candidates."""

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
from mednas.train._inherit import (
    Transfer,
    carries_across_shapes,
    load_weights,
    most_similar,
    same_structure,
    transfer_weights,
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
    "Transfer",
    "carries_across_shapes",
    "candidate_settings",
    "class_weights_for",
    "degenerate_predictions",
    "derive_seed",
    "fit",
    "load_weights",
    "make_loss",
    "most_similar",
    "not_learning_reason",
    "predict",
    "same_structure",
    "save_weights",
    "seed_everything",
    "select_device",
    "space_context",
    "space_for",
    "suggest_imbalance",
    "train_candidate",
    "transfer_weights",
    "BaseLoss",
    "LOSSES",
    "list_losses",
    "register_loss",
]
