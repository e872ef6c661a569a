"""Losses by registry key, from MONAI and torch: imbalance handling is a searchable, declared choice."""

from __future__ import annotations

from typing import Any

from mednas._registry import Registry

LOSSES: Registry[Any] = Registry("loss")

__all__ = ["LOSSES", "make_loss"]


def make_loss(name: str, problem: str, n_classes: int, class_weights: Any = None) -> Any:
    """Return a loss module for ``problem``.

    Classification losses take logits ``(B, C)`` and integer targets ``(B,)``; segmentation losses take
    logits ``(B, C, *S)`` and targets ``(B, 1, *S)``.

    Args:
        name: ``auto``, ``ce``, ``weighted_ce``, ``focal`` (classification) or ``dice``, ``dice_ce``,
            ``dice_focal``, ``tversky``, ``focal`` (segmentation).
        problem: ``"classification"`` or ``"segmentation"``.
        n_classes: Number of classes.
        class_weights: Tensor of per-class weights for CE (``weighted_ce``/``auto``).

    Raises:
        ValueError: For a loss that does not fit the problem.
    """
    import torch
    from monai import losses

    if name == "auto":
        name = "weighted_ce" if problem == "classification" else "dice_ce"
    if problem == "classification":
        if name == "ce":
            return torch.nn.CrossEntropyLoss()
        if name == "weighted_ce":
            return torch.nn.CrossEntropyLoss(weight=class_weights)
        if name == "focal":
            focal = losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, weight=class_weights)
            return lambda logits, y: focal(logits, y[:, None])
        raise ValueError(f"loss {name!r} is for segmentation; classification takes ce, weighted_ce or focal")
    common: dict[str, Any] = {"to_onehot_y": True, "softmax": True}
    if name == "dice":
        return losses.DiceLoss(**common)
    if name in ("dice_ce", "ce", "weighted_ce"):
        return losses.DiceCELoss(**common)
    if name == "dice_focal":
        return losses.DiceFocalLoss(**common)
    if name == "focal":
        return losses.FocalLoss(to_onehot_y=True, use_softmax=True)
    if name == "tversky":
        # alpha weighs false positives, beta false negatives: missing a lesion costs more.
        return losses.TverskyLoss(**common, alpha=0.3, beta=0.7)
    raise ValueError(f"unknown loss {name!r}")
