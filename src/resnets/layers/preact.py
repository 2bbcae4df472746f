"""Pre-activation blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks").

y = x + F(x) with BN-ReLU before each conv and nothing after the sum, so the identity path is clean
from block to block. Where the shortcut projects, it takes the pre-activated input, as in the paper's
code. ``dropout`` between the convs gives the Wide ResNet block (Zagoruyko & Komodakis 2016).
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


class _PreActUnit(ResidualUnit):
    """Shared wiring: the first BN-ReLU feeds both F and a projecting shortcut."""

    bn1: nn.Module
    relu: nn.Module
    downsample: nn.Module | None
    se: nn.Module | None

    def branch_after_preact(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.bn1(x)
        # Without a norm (norm="identity") bn1 returns x itself, and the in-place ReLU would overwrite the input
        # that the identity shortcut carries: the unit would compute relu(x) + F(x), a post-activation unit.
        pre = self.relu(normed.clone() if normed is x else normed)
        out = self.branch_after_preact(pre)
        if self.se is not None:
            out = self.se(out)
        return out, self.skip(x, projected_from=pre)


class PreActBasicBlock(_PreActUnit):
    """y = x + conv2(relu(bn2(conv1(relu(bn1(x)))))); with optional dropout before conv2 (WRN)."""

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
        dropout: float = 0.0,
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            drop_path, residual_scale, has_shortcut=shortcut != "none", io_shape=UnitShape(in_channels, planes, stride)
        )
        self.bn1 = norm(in_channels)
        self.relu = act()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn2 = norm(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = conv3x3(planes, planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else None
        self.downsample = make_shortcut(shortcut, in_channels, planes, stride, norm=None)

    def branch_after_preact(self, out: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(out)))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv2(out)

    def zero_init_last(self) -> None:
        # No norm follows the last conv in a pre-activation block: zero the conv itself.
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(_PreActUnit):
    """y = x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))), expansion 4."""

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
        self.bn1 = norm(in_channels)
        self.relu = act()
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn2 = norm(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn3 = norm(width)
        self.conv3 = conv1x1(width, out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else None
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, norm=None)

    def branch_after_preact(self, out: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(out)))
        out = self.relu(self.bn3(self.conv2(out)))
        return self.conv3(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)
