"""The basic residual block: two 3x3 convs (He et al. 2015, Fig. 2 left), torchvision's ``BasicBlock``.

Module names (conv1, bn1, conv2, bn2, downsample) are torchvision's and form the checkpoint format.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.residual import ResidualUnit
from resnets.layers.shortcuts import make_shortcut
from resnets.layers.skip_unit import UnitShape
from resnets.layers.squeeze_excite import SqueezeExcite


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(ResidualUnit):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); post-activation."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.ReLU,
        shortcut: str = "B",
        se_reduction: int = 0,
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            drop_path, residual_scale, has_shortcut=shortcut != "none", io_shape=UnitShape(in_channels, planes, stride)
        )
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = norm(planes)
        self.relu = act()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else None
        self.downsample = make_shortcut(shortcut, in_channels, planes, stride, norm)
        self.stride = stride

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return out, self.skip(x)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.relu(y)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)
