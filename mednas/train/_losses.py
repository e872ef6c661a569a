"""Losses by registry key, from MONAI and torch: imbalance handling is a searchable, declared choice."""

from __future__ import annotations

from typing import Any

from mednas._registry import Registry

LOSSES: Registry[Any] = Registry("loss")

__all__ = ["CLASS_WEIGHTED_LOSSES", "LOSSES", "make_loss", "resolve_loss", "stacks_imbalance_remedies"]

#: Classification losses that carry inverse-frequency class weights: one remedy for class imbalance.
CLASS_WEIGHTED_LOSSES = frozenset({"weighted_ce", "focal"})


def resolve_loss(name: str, problem: str, sampling: str = "uniform") -> str:
    """Return the loss ``auto`` stands for, given the batch sampling (other names unchanged).

    ``auto`` is class-weighted cross-entropy for classification, plain cross-entropy when batches are already
    class-balanced (weighting the loss as well would correct the class prior twice), Dice + CE for segmentation.
    """
    if name != "auto":
        return name
    if problem != "classification":
        return "dice_ce"
    return "ce" if sampling == "balanced" else "weighted_ce"


def stacks_imbalance_remedies(loss: str, problem: str, sampling: str) -> bool:
    """Whether ``loss`` with ``sampling`` applies both class-imbalance remedies (weighted loss and balanced batches).

    Each one alone shifts the model's prior from the data's prevalence to balanced classes; both together push
    it past balanced, so probabilities of the rare class are inflated and operating thresholds go extreme.
    """
    return (problem == "classification" and sampling == "balanced"
            and resolve_loss(loss, problem, sampling) in CLASS_WEIGHTED_LOSSES)


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

    name = resolve_loss(name, problem)
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
