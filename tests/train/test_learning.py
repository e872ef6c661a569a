"""The not-learning rule: flat loss and uninformative predictions, never one of them alone."""

from __future__ import annotations

import numpy as np

from mednas.train import degenerate_predictions, not_learning_reason


def _varied_probs(n: int = 32) -> np.ndarray:
    p = np.linspace(0.2, 0.8, n)
    return np.stack([1 - p, p], axis=1)


def test_flat_loss_and_constant_probabilities_is_not_learning() -> None:
    probs = np.tile([[0.5, 0.5]], (32, 1))
    reason = not_learning_reason([0.693, 0.692, 0.693], [0.3, 0.4, 0.35], probs, "classification")
    assert (
        reason
        == "training loss flat (0.693 -> 0.693 over 3 epochs) and predictions constant across 32 validation cases"
    )


def test_flat_loss_and_objective_never_improving_is_not_learning() -> None:
    reason = not_learning_reason([0.700, 0.698], [0.25, 0.25], _varied_probs(), "classification")
    assert reason is not None and "objective never improved (0.2500 at epoch 1" in reason
    # A loss that moved (here 1.4%, below the 3% "falling" bar) with varied predictions: not enough evidence.
    assert not_learning_reason([0.70, 0.69], [0.25, 0.25], _varied_probs(), "classification") is None


def test_a_network_perfect_from_the_first_epoch_is_not_flagged() -> None:
    # Regression: objective 1.0 at epoch 1 cannot rise; its loss still moved (2.6%), its predictions vary.
    assert not_learning_reason([0.228, 0.222], [1.0, 1.0], _varied_probs(), "classification") is None


def test_slow_learner_is_not_flagged() -> None:
    # Loss falls by less than 3% per epoch, but by more than 3% overall, with constant predictions: learning, slowly.
    assert (
        not_learning_reason(
            [0.693, 0.682, 0.670], [0.0, 0.0, 0.0], np.tile([[0.5, 0.5]], (8, 1)), "classification"
        )
        is None
    )
    # Loss flat, but the objective rises and the predictions vary: not flagged on the loss alone.
    assert not_learning_reason([0.693, 0.692], [0.2, 0.3], _varied_probs(), "classification") is None


def test_segmentation_empty_masks_while_loss_falls_is_learning() -> None:
    empty = np.zeros((4, 8, 8, 8), np.uint8)
    assert not_learning_reason([1.2, 0.9], [0.0, 0.0], empty, "segmentation") is None
    reason = not_learning_reason([1.2, 1.19], [0.0, 0.1], empty, "segmentation")
    assert reason is not None and reason.endswith(
        "predictions empty (no foreground) on all 4 validation cases"
    )


def test_one_epoch_is_never_judged() -> None:
    assert not_learning_reason([0.7], [0.0], np.tile([[0.5, 0.5]], (8, 1)), "classification") is None


def test_degenerate_predictions() -> None:
    assert degenerate_predictions(_varied_probs(), "classification") is None
    assert (
        degenerate_predictions(np.tile([[0.3, 0.7]], (5, 1)) + 1e-5, "classification")
        == "constant across 5 validation cases"
    )
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[1, 2, 2] = 1
    assert degenerate_predictions(mask, "segmentation") is None
