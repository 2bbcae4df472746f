"""The residual unit that every block family shares: y = post(scale * drop_path(F(x)) + shortcut(x)).

Subclasses compute F(x) and the shortcut in ``residual_and_shortcut`` (they may share work, as
pre-activation blocks do) and say what follows the sum in ``post``. Keeping the sum here means that
residual scaling, stochastic depth, plain mode and lesioning behave the same in every family.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.drop_path import DropPath


class ResidualUnit(nn.Module):
    """Base of residual blocks.

    Attributes read by instruments:
        residual_scale: constant multiplying F(x) (1.0; 0.1-0.3 as in Inception-ResNet; 0 lesions the branch).
        has_shortcut: False in plain mode, where the unit outputs post(F(x)).
    """

    def __init__(self, drop_path: float = 0.0, residual_scale: float = 1.0, has_shortcut: bool = True) -> None:
        super().__init__()
        self.drop_path = DropPath(drop_path)
        self.residual_scale = float(residual_scale)
        self.has_shortcut = has_shortcut

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """F(x) and the shortcut's output (None in plain mode)."""
        raise NotImplementedError

    def skip(self, x: torch.Tensor, projected_from: torch.Tensor | None = None) -> torch.Tensor | None:
        """The shortcut's output: None in plain mode, ``x`` for identity, else ``downsample`` applied to
        ``projected_from`` (pre-activation units project their activated input) or to ``x``."""
        if not self.has_shortcut:
            return None
        downsample = getattr(self, "downsample", None)
        if downsample is None:
            return x
        return downsample(x if projected_from is None else projected_from)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the sum: ReLU for post-activation blocks, nothing for pre-activation ones."""
        return y

    def zero_init_last(self) -> None:
        """Zero the last scale of F so the unit starts as its shortcut (Goyal et al. 2017)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.residual_and_shortcut(x)
        branch = self.drop_path(branch)
        if self.residual_scale != 1.0:
            branch = branch * self.residual_scale
        return self.post(branch if shortcut is None else branch + shortcut)

    def extra_repr(self) -> str:
        return f"residual_scale={self.residual_scale}, has_shortcut={self.has_shortcut}"
