"""The probability-averaging ensemble of fold models: what cross-validated retraining tests and export ships.

One definition serves both, so the ensemble's test figures are those of the network in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["EnsembleNet"]


class EnsembleNet(torch.nn.Module):
    """Average the softmax probabilities of member networks; output their log, ``(B, C[, *spatial])``.

    The output is ``log(mean_k softmax(member_k(x)))``, computed stably as a log-sum-exp of the members' log-softmax
    minus ``log K``: a softmax of it (what a bundle's postprocessing applies to logits) gives the mean probabilities
    exactly, and its argmax is the argmax of the mean. Every member must map the same input to outputs of one shape.

    Args:
        members: The member networks (eval mode is set by the caller).

    Example:
        >>> net = EnsembleNet([torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(1, 2, 1)])
        >>> tuple(net(torch.zeros(1, 1, 4, 4)).exp().sum(1).round().unique().tolist())
        (1.0,)
    """

    def __init__(self, members: Sequence[Any]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.log_k = math.log(len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = [torch.log_softmax(m(x), dim=1) for m in self.members]
        return torch.logsumexp(torch.stack(logs, dim=0), dim=0) - self.log_k
