"""Carry trained weights into another network: up the resolution ladder, and from one candidate to the next.

A ladder trial keeps training the same weights at a larger input shape, and with ``search.inherit`` a new
candidate starts from the most similar finished one of its family. Both are :func:`transfer_weights`: tensors whose
name and shape match are copied, tensors whose name matches but whose sizes differ get the overlapping slice,
anything else keeps the new network's own initialisation.

What was found, not assumed (``tests/train/test_inherit.py`` checks it for every registered family): every
built-in family builds the same state dict (names and shapes) at 16x16 and 32x32 (DenseNet, whose minimum is 29
pixels: 32x32 and 64x64) and at 16^3 and 32^3, so :func:`carries_across_shapes` is true for all of them and a
ladder never has to restart a built-in candidate. ResNet, DenseNet and EfficientNet classify after global
pooling; EfficientNet's ``image_size`` (reset by ``adapt_to_shape``) changes only its parameter-free "same"
padding; UNet, DynUNet and SegResNet are fully convolutional with their depth and strides fixed in the spec. A
plugin family whose constructor sizes a layer from the input shape (a fixed-size dense head, a positional
embedding) would not carry, and a ladder restarts it at the new size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mednas.spaces import BaseSearchSpace
    from mednas.spec import ArchSpec

__all__ = [
    "Transfer",
    "carries_across_shapes",
    "load_weights",
    "most_similar",
    "same_structure",
    "transfer_weights",
]

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Transfer:
    """How much of a network :func:`transfer_weights` filled from another's weights.

    Tensors are the destination's state-dict entries: parameters and buffers alike (batch-norm running
    statistics and ``num_batches_tracked`` count like weights).

    Args:
        exact: Tensors copied whole (same name and shape).
        sliced: Tensors that received the overlapping slice of a same-named tensor of other sizes.
        fresh: Tensors left as initialised (no same-named tensor, a different number of axes, or no overlap).
        fraction: Elements copied (whole or sliced) over all elements of the destination, in ``[0, 1]``; 1 for a
            destination without any.

    Example:
        >>> Transfer(exact=3, sliced=1, fresh=0, fraction=0.75).to_dict()["fraction"]
        0.75
    """

    exact: int
    sliced: int
    fresh: int
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (for a trial record)."""
        return {"exact": self.exact, "sliced": self.sliced, "fresh": self.fresh, "fraction": self.fraction}


def transfer_weights(src_state: Mapping[str, torch.Tensor], dst: torch.nn.Module) -> Transfer:
    """Copy ``src_state`` into ``dst`` wherever it fits, in place, and say how much was copied.

    Per entry of ``dst.state_dict()`` (parameters and buffers): the same name and shape in ``src_state`` is
    copied whole; the same name with the same number of axes but other sizes gets the overlapping block. That
    block starts at index 0 on the first two axes (output and input channels, or features) and is centred on
    the others (convolution kernels), so a 3x3 kernel lands on the centre taps of a 5x5 one and keeps computing
    the same function there. Everything else (missing names, a different number of axes, an empty overlap)
    keeps ``dst``'s own values. Values are cast to ``dst``'s dtype and device.

    Args:
        src_state: A state dict (``torch.load(model.pt, weights_only=True)``, or another network's).
        dst: The network to fill, typically freshly built and seeded.

    Returns:
        The counts and the fraction of ``dst``'s elements that came from ``src_state``.

    Example:
        >>> import torch
        >>> small, wide = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
        >>> transfer_weights(small.state_dict(), wide)
        Transfer(exact=0, sliced=2, fresh=0, fraction=0.6666666666666666)
    """
    import torch

    dst_state = dst.state_dict()
    src_shapes = {name: tuple(t.shape) for name, t in src_state.items()}
    plan = _plan(src_shapes, {name: tuple(t.shape) for name, t in dst_state.items()})
    values: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, (dst_index, src_index) in plan.copies.items():
            source = src_state[name]
            if not dst_index:  # the whole tensor: load_state_dict casts and moves it
                values[name] = source
                continue
            block = dst_state[name].clone()
            block[dst_index] = source[src_index].to(dtype=block.dtype, device=block.device)
            values[name] = block
    # Through load_state_dict, so modules' own load hooks (batch norm's num_batches_tracked) still apply.
    dst.load_state_dict(values, strict=False)
    return plan.transfer


def same_structure(src_state: Mapping[str, torch.Tensor], dst: torch.nn.Module) -> bool:
    """Whether ``src_state`` has exactly ``dst``'s state-dict names, each with the same shape.

    Then ``dst.load_state_dict(src_state)`` loads strictly and :func:`transfer_weights` copies everything.
    """
    dst_state = dst.state_dict()
    return src_state.keys() == dst_state.keys() and all(
        tuple(src_state[name].shape) == tuple(t.shape) for name, t in dst_state.items()
    )


def carries_across_shapes(
    space: BaseSearchSpace, spec: ArchSpec, shape_a: Sequence[int], shape_b: Sequence[int]
) -> bool:
    """Whether ``spec`` adapted to input ``shape_a`` and to ``shape_b`` has the same state-dict names and shapes.

    When it does, weights trained at one shape load unchanged into the network for the other (a ladder rung
    ``carried``); when not, the ladder restarts the candidate at the new shape. Both networks are built on
    PyTorch's ``meta`` device (shapes only, nothing allocated; milliseconds).

    Args:
        space: The spec's family (its :meth:`~mednas.spaces.BaseSearchSpace.adapt_to_shape` is used).
        spec: The sampled spec.
        shape_a: One spatial input shape, e.g. a lower rung's ``(16, 16)``.
        shape_b: The other, e.g. ``(32, 32)``.

    Example:
        >>> from mednas.spaces import create_space  # doctest: +SKIP
        >>> carries_across_shapes(create_space("resnet"), spec, (16, 16), (32, 32))  # doctest: +SKIP
        True
    """
    a = space.adapt_to_shape(spec, tuple(int(s) for s in shape_a))
    b = space.adapt_to_shape(spec, tuple(int(s) for s in shape_b))
    return a.hash == b.hash or _state_shapes(a) == _state_shapes(b)


def most_similar(spec: ArchSpec, candidates: Sequence[tuple[ArchSpec, Path]]) -> tuple[ArchSpec, Path] | None:
    """Pick the finished candidate whose weights fill the most of ``spec``'s network (weight inheritance).

    Only candidates of ``spec``'s family count (its network class for a spec that names no family). Similarity is the fraction of the new network's state-dict
    elements :func:`transfer_weights` would copy from the candidate, whole or sliced, computed from shapes on
    the ``meta`` device without reading any weights. Ties go to the candidate listed first, so the caller's
    order (for example best value first) decides between equals.

    Args:
        spec: The new candidate's spec.
        candidates: ``(spec, weights path)`` of the finished candidates.

    Returns:
        The most similar ``(spec, path)``, or None when no candidate is of the family or none would give a
        single element.

    Example:
        >>> parent = most_similar(spec, [(done_spec, run / "trials/3/model.pt")])  # doctest: +SKIP
        >>> state = load_weights(parent[1]) if parent else None  # doctest: +SKIP
    """
    mine = _state_shapes(spec)
    best: tuple[ArchSpec, Path] | None = None
    best_fraction = 0.0
    for other, path in candidates:
        if _family(other) != _family(spec):
            continue
        fraction = _plan(_state_shapes(other), mine).transfer.fraction
        if fraction > best_fraction:
            best, best_fraction = (other, path), fraction
    return best


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`~mednas.train.save_weights` (``model.pt``) onto the CPU.

    Raises:
        RunDirError: The file is not a plain state dict of tensors (``weights_only=True`` refuses a pickle with
            code in it rather than running it) or cannot be read.
    """
    import torch

    from mednas.errors import RunDirError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing, truncated, or a pickle with code in it: all one answer
        raise RunDirError(f"{path}: not a readable state dict of tensors") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{path}: not a state dict of tensors")
    return dict(state)


@dataclass(frozen=True)
class _Plan:
    transfer: Transfer
    #: Name -> (destination index, source index) of every tensor that receives values.
    copies: dict[str, tuple[tuple[slice, ...], tuple[slice, ...]]]


def _plan(src: Mapping[str, tuple[int, ...]], dst: Mapping[str, tuple[int, ...]]) -> _Plan:
    """Decide, from shapes alone, what :func:`transfer_weights` copies where."""
    exact = sliced = fresh = copied = total = 0
    copies: dict[str, tuple[tuple[slice, ...], tuple[slice, ...]]] = {}
    for name, shape in dst.items():
        total += math.prod(shape)
        other = src.get(name)
        if other == shape:
            exact += 1
            copied += math.prod(shape)
            copies[name] = ((), ())
            continue
        if other is None or len(other) != len(shape) or 0 in other or 0 in shape:
            fresh += 1
            continue
        overlap = [min(a, b) for a, b in zip(shape, other)]
        sliced += 1
        copied += math.prod(overlap)
        copies[name] = (_block(shape, overlap), _block(other, overlap))
    fraction = copied / total if total else 1.0
    return _Plan(Transfer(exact, sliced, fresh, fraction), copies)


def _block(shape: Sequence[int], overlap: Sequence[int]) -> tuple[slice, ...]:
    # Channel axes (the first two) from index 0; kernel axes centred, so kernel centres line up.
    return tuple(
        slice(0, n) if axis < 2 else slice((size - n) // 2, (size - n) // 2 + n)
        for axis, (size, n) in enumerate(zip(shape, overlap))
    )


def _family(spec: ArchSpec) -> str:
    # A spec made by hand may name no family; its network class stands in for one.
    return spec.family or spec.class_name


_shape_cache: dict[str, Shapes] = {}


def _state_shapes(spec: ArchSpec) -> Shapes:
    """The state-dict names and shapes of ``spec``'s network, built on the ``meta`` device (memoised by hash)."""
    if spec.hash not in _shape_cache:
        import torch

        from mednas.spec import build

        with torch.device("meta"):
            net = build(spec)
        if len(_shape_cache) > 1024:
            _shape_cache.clear()
        _shape_cache[spec.hash] = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    return _shape_cache[spec.hash]
