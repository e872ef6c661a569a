"""Patch training and sliding-window inference for volumes too large to train on whole.

:func:`random_patches` crops one patch per case from a training batch (centred on a random foreground voxel with
a set probability, as nnU-Net oversamples foreground so that small lesions are seen); :func:`sliding_window_logits`
predicts a whole volume from overlapping windows with MONAI's ``sliding_window_inference``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["random_patches", "sliding_window_logits"]


def random_patches(
    images: Any, labels: Any, patch: Sequence[int], gen: Any, *, foreground: float = 0.33
) -> tuple[Any, Any]:
    """Crop one random patch of size ``patch`` from every case of a batch.

    Args:
        images: ``(B, C, *S)`` tensor.
        labels: ``(B, *S)`` integer label maps.
        patch: Spatial patch size; axes larger than the volume are clamped to it.
        gen: ``torch.Generator`` that draws every position (so a seeded, resumed run draws the same ones).
        foreground: Probability that a patch is centred on a random voxel with a non-zero label (cases without
            foreground get a uniformly placed patch).

    Returns:
        ``(B, C, *P)`` images and ``(B, *P)`` labels.

    Example:
        >>> import torch
        >>> x, y = random_patches(torch.zeros(2, 1, 9, 10, 11), torch.zeros(2, 9, 10, 11, dtype=torch.long),
        ...                       (4, 4, 4), torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(y.shape)
        ((2, 1, 4, 4, 4), (2, 4, 4, 4))
    """
    import torch

    spatial = tuple(int(s) for s in images.shape[2:])
    size = tuple(min(int(p), s) for p, s in zip(patch, spatial))
    xs, ys = [], []
    for i in range(images.shape[0]):
        center: list[int] | None = None
        if foreground > 0 and torch.rand((), generator=gen).item() < foreground:
            fg = torch.nonzero(labels[i] > 0)
            if len(fg):
                center = fg[int(torch.randint(len(fg), (1,), generator=gen))].tolist()
        starts = []
        for axis, (p, s) in enumerate(zip(size, spatial)):
            if center is None:
                starts.append(int(torch.randint(s - p + 1, (1,), generator=gen)))
            else:
                starts.append(min(max(int(center[axis]) - p // 2, 0), s - p))
        window = tuple(slice(st, st + p) for st, p in zip(starts, size))
        xs.append(images[i][(slice(None), *window)])
        ys.append(labels[i][window])
    return torch.stack(xs), torch.stack(ys)


def sliding_window_logits(
    predictor: Callable[[Any], Any],
    images: Any,
    patch: Sequence[int],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
) -> Any:
    """Predict ``(B, C, *S)`` logits for whole volumes from overlapping windows of size ``patch``.

    Windows are blended with Gaussian weights (MONAI's ``sliding_window_inference``); volumes smaller than the
    patch are padded and the output cropped back.

    Args:
        predictor: ``(b, C_in, *patch) -> (b, C, *patch)`` logits (pads for the network's divisor itself).
        images: ``(B, C_in, *S)`` tensor.
        patch: Window size.
        overlap: Fraction of the window shared by neighbours.
        sw_batch_size: Windows run through the network at once.
    """
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        images,
        roi_size=tuple(int(p) for p in patch),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode="gaussian",
    )
