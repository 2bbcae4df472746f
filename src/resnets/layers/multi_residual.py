"""The multi-residual block (Abdi & Nahavandi 2016, "Multi-Residual Networks: Improving the Speed and
Accuracy of Residual Networks"): y = relu(shortcut(x) + sum_i F_i(x)), k residual functions in one block.

The paper's argument: a ResNet behaves like an ensemble of paths of many lengths (Veit et al. 2016), and k
functions per block multiply the number of paths without making the network deeper. Each F_i is the basic
block's conv3x3-BN-ReLU-conv3x3-BN (He et al. 2015), so k = 1 is exactly ``BasicBlock``.

Each branch can be lesioned on its own (``lesioned(branch=i)``): the block then sums the other branches and
the shortcut, which is how one counts the paths that a branch carries; lesioning every branch lesions the unit.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.basic import conv3x3
from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.residual import ResidualUnit
from resnets.layers.shortcuts import make_shortcut
from resnets.layers.skip_unit import UnitShape


class MultiResidualBlock(ResidualUnit):
    """``num_residuals`` parallel basic branches (``branches.<i>``), summed, plus one shortcut; post-activation."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        num_residuals: int = 2,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.ReLU,
        shortcut: str = "A",
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            drop_path, residual_scale, has_shortcut=shortcut != "none", io_shape=UnitShape(in_channels, planes, stride)
        )
        if num_residuals < 1:
            raise ValueError(f"num_residuals must be at least 1, got {num_residuals}")
        self.branches = nn.ModuleList(
            nn.Sequential(
                conv3x3(in_channels, planes, stride), norm(planes), act(), conv3x3(planes, planes), norm(planes)
            )
            for _ in range(num_residuals)
        )
        self.relu = act()
        self.downsample = make_shortcut(shortcut, in_channels, planes, stride, norm)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        branches = list(self.branches)
        if self.lesioned_branches and not self.is_lesioned:  # some branches lesioned: the others remain
            branches = [b for i, b in enumerate(branches) if i not in self.lesioned_branches]
        out = branches[0](x)  # (B, planes, H / stride, W / stride)
        for branch in branches[1:]:
            out = out + branch(x)
        return out, self.skip(x)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.relu(y)

    def zero_init_last(self) -> None:
        for branch in self.branches:
            nn.init.zeros_(branch[-1].weight)
