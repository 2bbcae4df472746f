"""The bottleneck block: 1x1 reduce, 3x3, 1x1 restore with expansion 4 (He et al. 2015, Fig. 5 right).

Grouped 3x3 convs give ResNeXt (Xie et al. 2017: ``groups`` = cardinality, ``base_width`` = width per
group); a larger ``base_width`` gives the Wide ResNet-50-2 layout. Module names are torchvision's.

Where the block downsamples: torchvision (and NVIDIA's "ResNet v1.5") put the stride on the 3x3 conv,
which costs a little speed and gains about 0.5% top-1; the paper (v1) put it on the first 1x1 conv,
which then discards three of every four pixels. ``stride_in_1x1=True`` gives v1.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.basic import conv1x1, conv3x3
from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.residual import ResidualUnit
from resnets.layers.shortcuts import make_shortcut
from resnets.layers.skip_unit import UnitShape
from resnets.layers.squeeze_excite import SqueezeExcite


class Bottleneck(ResidualUnit):
    """y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)); post-activation."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.ReLU,
        shortcut: str = "B",
        se_reduction: int = 0,
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        width = int(planes * (base_width / 64.0)) * groups
        out_channels = planes * self.expansion
        shape = UnitShape(in_channels, out_channels, stride)
        super().__init__(drop_path, residual_scale, has_shortcut=shortcut != "none", io_shape=shape)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = norm(out_channels)
        self.relu = act()
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else None
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, norm)
        self.stride = stride

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return out, self.skip(x)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.relu(y)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)
