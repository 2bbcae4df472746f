"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth").

In training each sample's residual branch is dropped with probability ``p`` and kept ones are scaled by
1/(1-p), so the expected output is unchanged and evaluation needs no rescaling: the layer is the identity
in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Per-sample drop of a residual branch with rate ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1, 1)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def linear_drop_rates(max_rate: float, num_blocks: int) -> list[float]:
    """Huang et al.'s linear decay of survival: block l of L (1-based) is dropped with rate l/L * max_rate."""
    return [max_rate * (i + 1) / num_blocks for i in range(num_blocks)]
