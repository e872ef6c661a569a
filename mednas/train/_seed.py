"""Explicit, derived seeds: every trial's seed comes from the task seed and the trial number."""

from __future__ import annotations

import random

import numpy as np


def derive_seed(*entropy: int) -> int:
    """Return a 31-bit seed derived from ``entropy`` via :class:`numpy.random.SeedSequence`.

    Example:
        >>> derive_seed(0, 3) == derive_seed(0, 3) != derive_seed(0, 4)
        True
    """
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0] & 0x7FFFFFFF)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) before building and training a network."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
