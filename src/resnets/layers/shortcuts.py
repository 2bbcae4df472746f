"""The shortcut connections of He et al. 2015 (options A, B, C) and ResNet-D (He et al. 2019, option D).

``make_shortcut`` returns the module for the shortcut path, or ``None`` for a parameter-free identity.
Plain networks (option ``none``) have no shortcut at all; the block then outputs F(x) alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnets.errors import UnknownNameError
from resnets.layers.factory import NormLayer

SHORTCUT_OPTIONS = ("A", "B", "C", "D", "none")


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by striding and zero-pad the new channels; no parameters (He et al. 2015, CIFAR)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A cannot reduce channels ({in_channels} -> {out_channels})")
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def projection(
    in_channels: int, out_channels: int, stride: int, norm: NormLayer | None, avg_pool: bool = False
) -> nn.Sequential:
    """1x1 conv (+ norm) projection; with ``avg_pool`` the stride is taken by a 2x2 average pool first
    (ResNet-D), so the 1x1 conv sees every input pixel instead of one in four."""
    layers: list[nn.Module] = []
    if avg_pool and stride > 1:
        layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        stride = 1
    elif avg_pool:
        layers.append(nn.Identity())  # nothing to pool; keeps conv at index 1 and norm at 2, as timm's keys have
    layers.append(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))
    if norm is not None:
        layers.append(norm(out_channels))
    return nn.Sequential(*layers)


def make_shortcut(
    option: str, in_channels: int, out_channels: int, stride: int, norm: NormLayer | None
) -> nn.Module | None:
    """The shortcut for one block; ``None`` means identity (or, for option ``none``, see ``has_shortcut``).

    ``norm`` is None for pre-activation blocks, whose projection sees an already normalised input.
    """
    if option not in SHORTCUT_OPTIONS:
        raise UnknownNameError("shortcut option", option, SHORTCUT_OPTIONS)
    changes_shape = stride != 1 or in_channels != out_channels
    if option == "none" or (option != "C" and not changes_shape):
        return None
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return projection(in_channels, out_channels, stride, norm, avg_pool=option == "D")
