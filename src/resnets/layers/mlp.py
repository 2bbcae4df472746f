"""The position-wise feed-forward branch of a Transformer block (Vaswani et al. 2017): Linear-act-Linear,
applied to every token alike; ViT (Dosovitskiy et al. 2021) uses GELU and a hidden width of 4 * dim.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.factory import ActLayer


class Mlp(nn.Module):
    """fc1 -> act -> dropout -> fc2."""

    def __init__(self, dim: int, hidden: int, *, act: ActLayer = nn.GELU, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))  # (..., dim)

    def zero_init_output(self) -> None:
        """Zero the last layer so the branch starts as zero."""
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
