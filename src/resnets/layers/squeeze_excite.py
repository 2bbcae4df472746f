"""Squeeze-and-Excitation (Hu et al. 2018): channel gates computed from global context."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 mean(x))), with a bottleneck of ``channels // reduction`` (at least 8)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.fc2(self.relu(self.fc1(gate)))
        return x * gate.sigmoid()
