"""A residual network built for time to accuracy on small images, in the line of Page's ResNet-9 and airbench.

Layout (widths 64-256-256, an RGB 32x32 input; every size follows the input)::

    whiten: 2x2 patch-whitening conv, 3 -> 24 channels, GELU                      (B, 24, 31, 31)
    layerS (S = 1, 2, 3): entry (3x3 conv -> 2x2 max-pool -> BN -> GELU), then   (B, 64, 15, 15) ...
                          `layers[S-1]` units  y = x + GELU(BN(conv3x3(x)))      (B, 256, 3, 3)
    head: global max-pool -> linear (no bias) -> x head_scale                   (B, classes)

Each stage's entry changes the width and halves the resolution; every unit that repeats inside a stage is a
residual unit with an identity skip. ``residual=False`` is the plain twin: the units output GELU(BN(conv(x))),
which with one unit per stage is exactly airbench94's network (Jordan 2024). The tricks that make it train in
few epochs are fields that can be switched off one by one:

- ``dirac_init``: each 3x3 conv starts as the identity on its first ``in_channels`` filters (airbench), so the
  plain twin starts close to a shallow net too;
- ``bn_scale``: BatchNorm scales are learned, or frozen at 1 (airbench: only the shifts learn);
- ``bn_momentum`` (PyTorch's convention: the weight of the new batch's statistics; airbench's 0.6 is 0.4 here)
  and ``bn_eps``;
- ``head_scale``: the logits are multiplied by 1/9, which with label smoothing keeps early steps small;
- the whitening layer's weights are fitted from data by the recipe (``whiten_images``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnets.layers.factory import get_act
from resnets.layers.skip_unit import SkipUnit, UnitShape
from resnets.layers.whitening import PatchWhitening
from resnets.models.base import SkipNetwork
from resnets.models.registry import register_model


@dataclass(frozen=True)
class SpeedrunConfig:
    """Widths, depth and the initialisation and normalisation choices of the speedrun network."""

    widths: tuple[int, ...] = (64, 256, 256)  # channels of each stage
    layers: tuple[int, ...] = (1, 1, 1)  # residual units per stage, after its entry
    residual: bool = True  # False: the plain twin (no skips)
    whiten_kernel: int = 2  # patch size of the whitening conv (2 * C * k^2 output channels)
    act: str = "gelu"
    dirac_init: bool = True  # 3x3 convs start as the identity on their first in_channels filters
    bn_scale: bool = False  # learn BatchNorm's scale (False: frozen at 1, only the shift learns)
    bn_momentum: float = 0.4  # weight of each batch in BN's running statistics (PyTorch's convention)
    bn_eps: float = 1e-12
    head_scale: float = 1 / 9  # multiplies the logits

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.layers) or not self.widths:
            raise ValueError(f"widths {self.widths} and layers {self.layers} must have the same, non-zero length")
        if min(self.widths) < 1 or min(self.layers) < 0:
            raise ValueError(f"widths must be >= 1 and layers >= 0, got {self.widths} and {self.layers}")
        if self.whiten_kernel < 1:
            raise ValueError(f"whiten_kernel must be >= 1, got {self.whiten_kernel}")
        if not 0 < self.bn_momentum <= 1 or not self.bn_eps > 0 or not self.head_scale > 0:
            raise ValueError(
                f"bn_momentum must be in (0, 1], bn_eps and head_scale > 0; got {self.bn_momentum}, {self.bn_eps}, "
                f"{self.head_scale}"
            )

    @property
    def depth(self) -> int:
        """Weighted layers on the main path: the whitening conv, each entry and unit conv, the classifier."""
        return 1 + len(self.widths) + sum(self.layers) + 1


def conv3x3(in_channels: int, out_channels: int, dirac: bool) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    if dirac:  # the first in_channels filters copy their input channel: an implicit skip at initialisation
        nn.init.dirac_(conv.weight.data[: min(in_channels, out_channels)])
    return conv


def batchnorm(channels: int, config: SpeedrunConfig) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=config.bn_eps, momentum=config.bn_momentum)
    norm.weight.requires_grad_(config.bn_scale)
    return norm


class StageEntry(nn.Module):
    """conv3x3 -> 2x2 max-pool -> BN -> act: the width changes and the resolution halves."""

    def __init__(self, in_channels: int, out_channels: int, config: SpeedrunConfig) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels, config.dirac_init)
        self.pool = nn.MaxPool2d(2)
        self.bn = batchnorm(out_channels, config)
        self.act = get_act(config.act)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pool(self.conv(x))))


class SpeedrunUnit(SkipUnit):
    """y = x + act(bn(conv3x3(x))); the plain twin's unit outputs act(bn(conv3x3(x)))."""

    def __init__(self, channels: int, config: SpeedrunConfig) -> None:
        super().__init__(UnitShape(channels, channels), has_shortcut=config.residual)
        self.conv = conv3x3(channels, channels, config.dirac_init)
        self.bn = batchnorm(channels, config)
        self.act = get_act(config.act)()

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.act(self.bn(self.conv(x))), (x if self.has_shortcut else None)


class SpeedrunNet(SkipNetwork):
    """whiten -> stages (entry + units) -> global max-pool -> fc x head_scale; see the module docstring."""

    input_kind = "image"

    def __init__(self, config: SpeedrunConfig, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        self.whiten = PatchWhitening(in_channels, config.whiten_kernel)
        self.act = get_act(config.act)()
        channels = self.whiten.out_channels
        self.feature_info = [{"num_chs": channels, "reduction": 1, "module": "act"}]
        self.stage_names: list[str] = []
        for index, (width, units) in enumerate(zip(config.widths, config.layers)):
            name = f"layer{index + 1}"
            stage = [StageEntry(channels, width, config), *(SpeedrunUnit(width, config) for _ in range(units))]
            self.add_module(name, nn.Sequential(*stage))
            self.stage_names.append(name)
            self.feature_info.append({"num_chs": width, "reduction": 2 ** (index + 1), "module": name})
            channels = width
        self.num_features = channels
        # The unpadded whitening conv trims k - 1 pixels, then each stage halves; global pooling needs one left.
        self.border = config.whiten_kernel - 1
        self.min_input_size = self.border + 2 ** len(config.widths)
        self.fc = nn.Linear(channels, num_classes, bias=False) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))  # (B, 2*C*k^2, H-k+1, W-k+1)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x  # (B, widths[-1], H', W')

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global max-pool (airbench's MaxPool2d(3) on its 3x3 map), then the scaled, bias-free classifier."""
        x = torch.flatten(F.adaptive_max_pool2d(features, 1), 1)  # (B, widths[-1])
        return x if pre_logits else self.fc(x) * self.config.head_scale

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [
            (f"{name}.{i}", stage, unit)
            for stage, name in enumerate(self.stage_names, start=1)
            for i, unit in enumerate(getattr(self, name))
            if isinstance(unit, SpeedrunUnit)
        ]


MODELS: dict[str, tuple[SpeedrunConfig, str]] = {
    "speedrun": (
        SpeedrunConfig(),
        "Residual speedrun net for CIFAR (airbench94's layout with an identity skip over each repeated conv)",
    ),
    "speedrun_plain": (SpeedrunConfig(residual=False), "Plain twin of speedrun (airbench94's network)"),
}

for _name, (_config, _text) in MODELS.items():
    register_model(
        _name, SpeedrunNet, _config, num_classes=10, input_size=(3, 32, 32), family="speedrun", description=_text
    )
