"""When a candidate has not started learning: the one rule the proxy search and retraining share.

A network that never starts learning (dead activations, a collapsed output, vanishing gradients) says little
about its architecture; it is flagged and pruned rather than ranked with a score of 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOSS_DROP", "LOSS_STILL", "PROB_TOLERANCE", "degenerate_predictions", "not_learning_reason"]

#: The training loss must fall by at least this fraction of the first epoch's loss to count as falling.
LOSS_DROP = 0.03
#: A loss that moved by less than this fraction of the first epoch's loss means training had no effect at all
#: (a learning rate of 0, frozen weights); only then does an objective that never improved count as evidence.
LOSS_STILL = 0.01
#: Class probabilities that differ by less than this across all validation cases count as constant.
PROB_TOLERANCE = 1e-3


def degenerate_predictions(outputs: np.ndarray | None, problem: str) -> str | None:
    """Say how validation predictions carry no information, or return None when they vary.

    Args:
        outputs: Classification: class probabilities ``(N, C)``; segmentation: label maps ``(N, *S)``.
        problem: ``"classification"`` or ``"segmentation"``.

    Returns:
        ``"constant across N validation cases"`` (classification: every class probability spans less than
        :data:`PROB_TOLERANCE` over the cases), ``"empty (no foreground) on all N validation cases"``
        (segmentation), or None.

    Example:
        >>> degenerate_predictions(np.full((4, 2), 0.5), "classification")
        'constant across 4 validation cases'
    """
    if outputs is None or len(outputs) == 0:
        return None
    n = len(outputs)
    if problem == "classification":
        probs = np.asarray(outputs, dtype=np.float64).reshape(n, -1)
        spread = float((probs.max(axis=0) - probs.min(axis=0)).max()) if n > 1 else 0.0
        return f"constant across {n} validation cases" if n > 1 and spread < PROB_TOLERANCE else None
    if not np.any(np.asarray(outputs) > 0):
        return f"empty (no foreground) on all {n} validation cases"
    return None


def not_learning_reason(
    losses: Sequence[float],
    values: Sequence[float],
    outputs: np.ndarray | None,
    problem: str,
) -> str | None:
    """Decide whether a training run has not started learning, and say why.

    The rule needs two epochs at least and both kinds of evidence, so a network that learns slowly is not
    condemned on one of them (a segmentation net often predicts empty masks while its loss falls):

    1. the training loss has not fallen: no epoch after the first has a loss below ``(1 - LOSS_DROP)`` times
       the first epoch's (3%), **and**
    2. the validation predictions are uninformative: the latest ones are constant across cases
       (classification) or empty on every case (segmentation), **or** the validation objective never rose
       above its first-epoch value while the loss did not move at all (less than ``LOSS_STILL``, 1%, in
       either direction: training had no effect). An objective that never rose is no evidence on its own: a
       network that is already perfect after one epoch cannot rise either.

    Args:
        losses: Mean training loss of each epoch so far, first epoch first.
        values: Validation objective of each epoch so far (higher is better; ``-inf`` for undefined).
        outputs: The latest epoch's validation predictions (see :func:`degenerate_predictions`).
        problem: ``"classification"`` or ``"segmentation"``.

    Returns:
        None while the run may be learning (always with fewer than two epochs), else a one-line reason such as
        ``"training loss flat (0.693 -> 0.692 over 3 epochs) and predictions constant across 32 validation cases"``.

    Example:
        >>> not_learning_reason([0.69, 0.69], [0.5, 0.5], None, "classification")
        'training loss flat (0.690 -> 0.690 over 2 epochs) and objective never improved (0.5000 at epoch 1, best later 0.5000)'
        >>> not_learning_reason([0.69, 0.60], [0.5, 0.5], None, "classification") is None
        True
    """
    if len(losses) < 2 or len(values) < 2:
        return None
    first = float(losses[0])
    later = min(float(v) for v in losses[1:])
    if later < (1.0 - LOSS_DROP) * first:
        return None
    flat = f"training loss flat ({first:.3f} -> {float(losses[-1]):.3f} over {len(losses)} epochs)"
    degenerate = degenerate_predictions(outputs, problem)
    if degenerate:
        return f"{flat} and predictions {degenerate}"
    best_later = max(float(v) for v in values[1:])
    still = max(abs(float(v) - first) for v in losses[1:]) < LOSS_STILL * abs(first)
    if still and not best_later > float(values[0]) + 1e-9:
        return f"{flat} and objective never improved ({float(values[0]):.4f} at epoch 1, best later {best_later:.4f})"
    return None
