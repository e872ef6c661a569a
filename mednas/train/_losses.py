"""Losses by registry key, from MONAI and torch: imbalance handling is a searchable, declared choice.

A loss is a :class:`BaseLoss` subclass registered with :func:`register_loss` (the built-ins too; a plugin also
lists it in the ``mednas.losses`` entry-point group), named by ``training.loss`` or ``search.losses``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from mednas._registry import PluginRegistry

__all__ = [
    "CLASS_WEIGHTED_LOSSES",
    "LOSSES",
    "BaseLoss",
    "is_class_weighted",
    "list_losses",
    "make_loss",
    "register_loss",
    "resolve_loss",
    "stacks_imbalance_remedies",
]

#: Built-in classification losses that carry inverse-frequency class weights: one remedy for class imbalance.
CLASS_WEIGHTED_LOSSES = frozenset({"weighted_ce", "focal"})

#: A loss: ``loss(logits, target)`` returning a scalar tensor (shapes in :meth:`BaseLoss.build`).
LossFn = Callable[[Any, Any], Any]


class BaseLoss(abc.ABC):
    """A training loss for the problems it lists.

    Subclasses set :attr:`problems` (and :attr:`class_weighted` when the loss uses the class weights) and
    implement :meth:`build`.
    """

    #: Registry key (``training.loss``), set by :func:`register_loss`.
    name: ClassVar[str] = ""
    #: Problems the loss can train: ``"classification"`` and/or ``"segmentation"``.
    problems: ClassVar[tuple[str, ...]] = ()
    #: Classification: the loss applies the inverse-frequency class weights (one imbalance remedy), so it is
    #: not combined with balanced batches unless ``training.stack_imbalance_remedies`` allows it.
    class_weighted: ClassVar[bool] = False

    @abc.abstractmethod
    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        """Return the loss function for ``problem``.

        Classification losses take logits ``(B, C)`` and integer targets ``(B,)``; segmentation losses take
        logits ``(B, C, H, W[, D])`` and integer targets ``(B, 1, H, W[, D])``. Both return a scalar tensor
        that autograd differentiates.

        Args:
            problem: One of :attr:`problems`.
            n_classes: ``C``.
            class_weights: Classification: ``(C,)`` float tensor of inverse-frequency class weights (mean 1) on
                the training device, or None.
        """


LOSSES: PluginRegistry[type[BaseLoss]] = PluginRegistry(
    "loss", "mednas.losses", base=BaseLoss, builtins="mednas.train._losses"
)

_FOR_CLASSIFICATION = "ce, weighted_ce or focal"


def register_loss(name: str) -> Any:
    """Register a :class:`BaseLoss` subclass under ``name`` (the value of ``training.loss``).

    Built-in losses use this decorator too; a plugin package also lists the class in its ``mednas.losses``
    entry-point group so that a task naming the loss finds it.
    """
    return LOSSES.register(name)


def list_losses(pattern: str = "*", *, problem: str | None = None) -> list[str]:
    """Names of the registered losses matching ``pattern`` (and ``problem``, when given)."""
    return [n for n in LOSSES.names(pattern) if problem is None or problem in LOSSES.get(n).problems]


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


def is_class_weighted(name: str, problem: str = "classification", sampling: str = "uniform") -> bool:
    """Whether the loss ``name`` (``auto`` resolved for ``sampling``) applies the class weights."""
    resolved = resolve_loss(name, problem, sampling)
    if resolved in CLASS_WEIGHTED_LOSSES:
        return True
    loss = LOSSES.find(resolved)
    return bool(loss is not None and loss.class_weighted)


def stacks_imbalance_remedies(loss: str, problem: str, sampling: str) -> bool:
    """Whether ``loss`` with ``sampling`` applies both class-imbalance remedies (weighted loss and balanced batches).

    Each one alone shifts the model's prior from the data's prevalence to balanced classes; both together push
    it past balanced, so probabilities of the rare class are inflated and operating thresholds go extreme.
    """
    return (
        problem == "classification" and sampling == "balanced" and is_class_weighted(loss, problem, sampling)
    )


def make_loss(name: str, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
    """Return a loss module for ``problem``.

    Classification losses take logits ``(B, C)`` and integer targets ``(B,)``; segmentation losses take
    logits ``(B, C, *S)`` and targets ``(B, 1, *S)``.

    Args:
        name: ``auto``, ``ce``, ``weighted_ce``, ``focal`` (classification) or ``dice``, ``dice_ce``,
            ``dice_focal``, ``tversky``, ``focal`` (segmentation), or a plugin's name.
        problem: ``"classification"`` or ``"segmentation"``.
        n_classes: Number of classes.
        class_weights: Tensor of per-class weights for CE (``weighted_ce``/``auto``).

    Raises:
        ValueError: For an unknown loss, or one that does not fit the problem.
    """
    name = resolve_loss(name, problem)
    try:
        cls = LOSSES.get(name)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    if problem not in cls.problems:
        if problem == "classification" and cls.__module__ == __name__:
            raise ValueError(f"loss {name!r} is for segmentation; classification takes {_FOR_CLASSIFICATION}")
        raise ValueError(f"loss {name!r} is for {' and '.join(cls.problems)}, not {problem}")
    return cls().build(problem, n_classes, class_weights)


# ------------------------------------------------------------------------------------------------ built-ins


def _segmentation_common() -> dict[str, Any]:
    return {"to_onehot_y": True, "softmax": True}


@register_loss("ce")
class CrossEntropy(BaseLoss):
    """Cross-entropy (segmentation: Dice + CE, as ``dice_ce``)."""

    problems: ClassVar[tuple[str, ...]] = ("classification", "segmentation")

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        import torch
        from monai import losses

        if problem == "classification":
            return torch.nn.CrossEntropyLoss()
        return losses.DiceCELoss(**_segmentation_common())


@register_loss("weighted_ce")
class WeightedCrossEntropy(BaseLoss):
    """Cross-entropy with inverse-frequency class weights (segmentation: Dice + CE, as ``dice_ce``)."""

    problems: ClassVar[tuple[str, ...]] = ("classification", "segmentation")
    class_weighted: ClassVar[bool] = True

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        import torch
        from monai import losses

        if problem == "classification":
            return torch.nn.CrossEntropyLoss(weight=class_weights)
        return losses.DiceCELoss(**_segmentation_common())


@register_loss("focal")
class Focal(BaseLoss):
    """Focal loss (gamma 2, class-weighted for classification)."""

    problems: ClassVar[tuple[str, ...]] = ("classification", "segmentation")
    class_weighted: ClassVar[bool] = True

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        from monai import losses

        if problem == "classification":
            focal = losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, weight=class_weights)
            return lambda logits, y: focal(logits, y[:, None])
        return losses.FocalLoss(to_onehot_y=True, use_softmax=True)


@register_loss("dice")
class Dice(BaseLoss):
    """Soft Dice."""

    problems: ClassVar[tuple[str, ...]] = ("segmentation",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        from monai import losses

        return losses.DiceLoss(**_segmentation_common())


@register_loss("dice_ce")
class DiceCE(BaseLoss):
    """Soft Dice plus cross-entropy."""

    problems: ClassVar[tuple[str, ...]] = ("segmentation",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        from monai import losses

        return losses.DiceCELoss(**_segmentation_common())


@register_loss("dice_focal")
class DiceFocal(BaseLoss):
    """Soft Dice plus focal loss."""

    problems: ClassVar[tuple[str, ...]] = ("segmentation",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        from monai import losses

        return losses.DiceFocalLoss(**_segmentation_common())


@register_loss("tversky")
class Tversky(BaseLoss):
    """Tversky loss weighing false negatives more (alpha 0.3, beta 0.7): missing a lesion costs more."""

    problems: ClassVar[tuple[str, ...]] = ("segmentation",)

    def build(self, problem: str, n_classes: int, class_weights: Any = None) -> LossFn:
        from monai import losses

        # alpha weighs false positives, beta false negatives.
        return losses.TverskyLoss(**_segmentation_common(), alpha=0.3, beta=0.7)
