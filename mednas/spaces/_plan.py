"""Shape arithmetic that several families share: how deep a shape allows, and how far inputs get padded.

Spaces plan strides from the proxy shape; training pads inputs to :func:`required_divisor` with
:func:`padded_shape`, so odd sizes such as 33x34x35 work with every family.
"""

from __future__ import annotations

from collections.abc import Sequence

from mednas.spec import ArchSpec

__all__ = [
    "check_choices",
    "max_halvings",
    "padded_shape",
    "powers_of_two",
    "required_divisor",
    "stride_product",
]


def required_divisor(spec: ArchSpec) -> tuple[int, ...]:
    """Return, per spatial axis, the number that inputs of ``spec``'s network must be a multiple of.

    Asks the family that sampled the spec (``spec.family``); specs from unknown families need no padding.

    Example:
        >>> spec = ArchSpec("monai.networks.nets.UNet", {"spatial_dims": 2, "in_channels": 1,
        ...                 "out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2]}, "unet", 2, 1, 2)
        >>> required_divisor(spec)
        (4, 4)
    """
    from mednas.spaces._registry import SPACES, _ensure_builtins

    _ensure_builtins()
    if spec.family and spec.family in SPACES:
        return tuple(int(d) for d in SPACES.get(spec.family).required_divisor(spec))
    return (1,) * spec.spatial_dims


def padded_shape(shape: Sequence[int], divisor: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` with every axis rounded up to a multiple of its ``divisor``.

    Example:
        >>> padded_shape((33, 34, 35), (8, 8, 4))
        (40, 40, 36)
    """
    if len(shape) != len(divisor):
        raise ValueError(f"shape {list(shape)} and divisor {list(divisor)} differ in length")
    return tuple(-(-int(s) // int(d)) * int(d) for s, d in zip(shape, divisor))


def max_halvings(size: int, min_feature_size: int) -> int:
    """Return how many stride-2 steps ``size`` allows while the smallest feature map keeps ``min_feature_size``."""
    n = 0
    while size // 2 ** (n + 1) >= min_feature_size:
        n += 1
    return n


def powers_of_two(low: int, high: int) -> list[int]:
    """Return the powers of two in ``[low, high]``, or ``[low]`` when there are none (tiny test options)."""
    values = [2**k for k in range(12) if low <= 2**k <= high]
    return values or [int(low)]


def stride_product(strides: Sequence[int | Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Return the per-axis product of MONAI-style strides (each an int or one int per axis)."""
    product = [1] * spatial_dims
    for stride in strides:
        per_axis = [int(stride)] * spatial_dims if isinstance(stride, int) else [int(s) for s in stride]
        product = [p * s for p, s in zip(product, per_axis)]
    return tuple(product)


def check_choices(space: str, option: str, values: Sequence[object], allowed: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``values`` is a non-empty list drawn from ``allowed``."""
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(
            f"option {option!r} of search space {space!r} must be a non-empty list of {list(allowed)}, got {list(values)}"
        )
