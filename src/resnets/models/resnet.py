"""One ResNet that covers the ImageNet, CIFAR, pre-activation, plain, Wide and ResNeXt layouts by data.

A variant is a :class:`ResNetConfig`: block kind, stage sizes, widths, stem, shortcut option. Module
names (conv1, bn1, layer1..4, fc, and torchvision's block names) are torchvision's, so torchvision's
ResNet state dicts load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from resnets.layers.basic import BasicBlock
from resnets.layers.bottleneck import Bottleneck
from resnets.layers.drop_path import linear_drop_rates
from resnets.layers.factory import get_act, get_norm
from resnets.layers.preact import PreActBasicBlock, PreActBottleneck
from resnets.layers.residual import ResidualUnit
from resnets.layers.shortcuts import SHORTCUT_OPTIONS
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.options import PLAIN_DROP_PATH, refuse_inapplicable

BLOCKS: dict[str, type[ResidualUnit]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}
STEMS = ("imagenet", "deep", "cifar")


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that tells one ResNet variant from another."""

    block: str = "basic"  # basic | bottleneck | preact_basic | preact_bottleneck
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # "planes" per stage; bottlenecks output 4x this
    stem: str = "imagenet"  # imagenet: 7x7/2 conv + 3x3/2 max-pool; deep: three 3x3 convs (ResNet-C); cifar: one 3x3
    stem_width: int = 64  # channels out of the stem
    shortcut: str = (
        "B"  # A zero-pad | B project on shape change | C project always | D avg-pool + project | none (plain)
    )
    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # ResNeXt width per group; 128 gives Wide ResNet-50-2
    stride_in_1x1: bool = False  # bottleneck downsampling on the first 1x1 (v1, the paper) instead of the 3x3 (v1.5)
    se_reduction: int = 0  # Squeeze-and-Excitation reduction ratio; 0 disables SE
    dropout: float = 0.0  # dropout between the two convs of pre-activation basic blocks (Wide ResNet)
    drop_path_rate: float = 0.0  # stochastic depth: drop rate of the last block, decaying linearly to 0
    residual_scale: float | str = 1.0  # constant multiplying F(x), or "inv_sqrt_depth" for 1/sqrt(#blocks)
    zero_init_last: bool = False  # zero the last norm scale of each branch (off: torchvision parity)
    norm: str = "batchnorm"
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {self.stem!r}")
        if self.shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut must be one of {list(SHORTCUT_OPTIONS)}, got {self.shortcut!r}")
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have the same, non-zero length")
        if isinstance(self.residual_scale, str) and self.residual_scale != "inv_sqrt_depth":
            raise ValueError(f"residual_scale must be a number or 'inv_sqrt_depth', got {self.residual_scale!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        refuse_inapplicable(self, self._inapplicable())

    def _inapplicable(self) -> dict[str, str]:
        """The fields the chosen block kind and shortcut cannot use, each with the reason (an error if set)."""
        reasons: dict[str, str] = {}
        if self.block not in ("bottleneck", "preact_bottleneck"):
            bottleneck_only = f"{self.block} blocks, only to bottleneck and preact_bottleneck blocks"
            reasons.update(dict.fromkeys(("groups", "base_width", "stride_in_1x1"), bottleneck_only))
        if self.block != "preact_basic":
            reasons["dropout"] = f"{self.block} blocks, only to preact_basic blocks (Wide ResNet)"
        if self.shortcut == "none":
            # Without a shortcut a block's output is F(x) alone: zeroing or dropping F zeroes the whole signal.
            reasons["zero_init_last"] = (
                "plain nets (shortcut='none'): every block would output zeros, so only the classifier bias would learn"
            )
            reasons["drop_path_rate"] = PLAIN_DROP_PATH
        return reasons

    @property
    def preact(self) -> bool:
        return self.block.startswith("preact")

    @property
    def num_blocks(self) -> int:
        return sum(self.layers)


class ResNet(SkipNetwork):
    """Stem -> stages of residual blocks (layer1..N) -> [final BN-ReLU if pre-activation] -> pool -> fc."""

    def __init__(self, config: ResNetConfig, *, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        norm, act = get_norm(config.norm), get_act(config.act)
        block_cls = BLOCKS[config.block]
        self._build_stem(config, in_channels, norm, act)

        depth = config.num_blocks
        scale = 1.0 / math.sqrt(depth) if config.residual_scale == "inv_sqrt_depth" else float(config.residual_scale)
        drop_rates = iter(linear_drop_rates(config.drop_path_rate, depth))
        options: dict = {"norm": norm, "act": act, "shortcut": config.shortcut, "se_reduction": config.se_reduction}
        if config.block in ("bottleneck", "preact_bottleneck"):
            options.update(groups=config.groups, base_width=config.base_width, stride_in_1x1=config.stride_in_1x1)
        if config.block == "preact_basic":
            options.update(dropout=config.dropout)

        channels = config.stem_width
        # Feature 0 is the stem before its max-pool (timm's act1): a pre-activation stem is its conv alone.
        reduction = 1 if config.stem == "cifar" else 2
        self.feature_info = [
            {"num_chs": channels, "reduction": reduction, "module": "conv1" if config.preact else "relu"}
        ]
        reduction *= 1 if self.maxpool is None else 2
        self.stage_names: list[str] = []
        for index, (num, planes) in enumerate(zip(config.layers, config.widths)):
            blocks = []
            for i in range(num):
                stride = 2 if index > 0 and i == 0 else 1
                block = block_cls(channels, planes, stride, drop_path=next(drop_rates), residual_scale=scale, **options)
                blocks.append(block)
                channels = planes * block_cls.expansion
            name = f"layer{index + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            reduction *= 2 if index > 0 else 1
            self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": name})

        self.num_features = channels
        # Pre-activation nets end with the BN-ReLU that the last block's sum did not get.
        self.bn_final = norm(channels) if config.preact else None
        self.fc = make_classifier(channels, num_classes)
        self._init_weights(config.zero_init_last)

    def _build_stem(self, config: ResNetConfig, in_channels: int, norm, act) -> None:
        width = config.stem_width
        if config.stem == "deep":
            # ResNet-C (He et al. 2019): three 3x3 convs replace the 7x7; timm's resnet*d key layout.
            half = width // 2
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
                norm(half),
                act(),
                nn.Conv2d(half, half, 3, padding=1, bias=False),
                norm(half),
                act(),
                nn.Conv2d(half, width, 3, padding=1, bias=False),
            )
        elif config.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        # A pre-activation stem is the conv alone: the first block's BN-ReLU follows it.
        self.bn1 = None if config.preact else norm(width)
        self.relu = act()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if config.stem != "cifar" else None

    def _init_weights(self, zero_init_last: bool) -> None:
        """torchvision's initialisation (He et al. 2015 normal, fan-out), so weights match in distribution."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for info in self.residual_blocks():
                info.module.zero_init_last()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return x if self.maxpool is None else self.maxpool(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)  # (B, stem_width, H/4, W/4) for ImageNet stems, (B, stem_width, H, W) for CIFAR
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.bn_final is not None:
            x = self.relu(self.bn_final(x))
        return x  # (B, num_features, h, w)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [
            (f"{name}.{i}", stage, block)
            for stage, name in enumerate(self.stage_names, start=1)
            for i, block in enumerate(getattr(self, name))
        ]
