"""Multi-residual networks for CIFAR (Abdi & Nahavandi 2016) on the layout of He et al.'s CIFAR ResNets:
a 3x3 conv stem of 16 channels, three stages of blocks at 16, 32, 64 channels (stride 2 at stages 2 and 3),
global average pooling and a linear classifier; every block is a :class:`MultiResidualBlock` with
``num_residuals`` branches. With ``num_residuals=1`` the network is the CIFAR ResNet of the same depth.

A small model class of its own rather than an entry of ``ResNet``'s block table, since the extra option
(the number of branches) has no meaning for the other block kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from resnets.layers.drop_path import linear_drop_rates
from resnets.layers.factory import get_act, get_norm
from resnets.layers.multi_residual import MultiResidualBlock
from resnets.layers.shortcuts import SHORTCUT_OPTIONS
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.options import PLAIN_DROP_PATH, refuse_inapplicable
from resnets.models.registry import register_model


@dataclass(frozen=True)
class MultiResNetConfig:
    """Stage sizes, widths and the number of residual functions per block."""

    layers: tuple[int, ...] = (3, 3, 3)  # blocks per stage; depth = 6n + 2 as in He et al. 2015
    widths: tuple[int, ...] = (16, 32, 64)
    num_residuals: int = 2  # k residual functions summed in each block
    shortcut: str = "A"  # as the CIFAR ResNets: zero-padding where the shape changes
    drop_path_rate: float = 0.0
    norm: str = "batchnorm"
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.num_residuals < 1:
            raise ValueError(f"num_residuals must be at least 1, got {self.num_residuals}")
        if self.shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}, got {self.shortcut!r}")
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have the same, non-zero length")
        if self.shortcut == "none":  # a block is then the sum of its branches alone
            refuse_inapplicable(self, {"drop_path_rate": PLAIN_DROP_PATH})


class MultiResNet(SkipNetwork):
    """conv1-bn1-relu -> layer1..N of multi-residual blocks -> average pool -> fc (the CIFAR ResNet's names)."""

    input_kind = "image"

    def __init__(self, config: MultiResNetConfig, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        norm, act = get_norm(config.norm), get_act(config.act)
        channels = config.widths[0]
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.relu = act()
        rates = iter(linear_drop_rates(config.drop_path_rate, sum(config.layers)))
        self.feature_info = [{"num_chs": channels, "reduction": 1, "module": "relu"}]
        self.stage_names: list[str] = []
        for index, (num, planes) in enumerate(zip(config.layers, config.widths)):
            blocks = []
            for i in range(num):
                stride = 2 if index > 0 and i == 0 else 1
                blocks.append(
                    MultiResidualBlock(
                        channels,
                        planes,
                        stride,
                        num_residuals=config.num_residuals,
                        norm=norm,
                        act=act,
                        shortcut=config.shortcut,
                        drop_path=next(rates),
                    )
                )
                channels = planes
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{index + 1}")
            self.feature_info.append({"num_chs": channels, "reduction": 2**index, "module": f"layer{index + 1}"})
        self.num_features = channels
        self.fc = make_classifier(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, widths[0], H, W)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x  # (B, widths[-1], H / 4, W / 4)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [
            (f"{name}.{i}", stage, block)
            for stage, name in enumerate(self.stage_names, start=1)
            for i, block in enumerate(getattr(self, name))
        ]


MODELS: dict[str, tuple[MultiResNetConfig, str]] = {
    f"multires_cifar_k{k}": (
        MultiResNetConfig(num_residuals=k),
        f"Multi-residual CIFAR net (Abdi & Nahavandi 2016): ResNet-20 layout, {k} residual functions per block",
    )
    for k in (2, 4)
}

for _name, (_config, _text) in MODELS.items():
    register_model(
        _name, MultiResNet, _config, num_classes=10, input_size=(3, 32, 32), family="multires", description=_text
    )
