"""Plain CIFAR networks with CReLU and looks-linear initialisation (Balduzzi et al. 2017, section 5).

The layout is He et al.'s CIFAR plain net (6n + 2 layers: a 3x3 stem, three stages of 2n 3x3 convs at 16,
32, 64 channels with stride 2 entering stages 2 and 3, global average pooling, a linear classifier) with
every ReLU replaced by a CReLU, which doubles the channels each conv sees. With ``init="looks_linear"``
every conv after the stem and the classifier get mirrored weights [W0, -W0], so the network computes an
affine function at initialisation (BN in eval mode); ``init="orthogonal"`` draws every weight
independently (the same architecture without the mirror: its gradients shatter with depth).

No shortcuts: ``residual_blocks()`` lists the plain units, as for the plain ResNets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from resnets.layers.factory import get_norm
from resnets.layers.looks_linear import CReLUConvUnit, looks_linear_
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.registry import register_model

INITS = ("looks_linear", "orthogonal")


@dataclass(frozen=True)
class PlainLLConfig:
    """Depth, widths and the initialisation of a plain CReLU network."""

    layers: tuple[int, ...] = (6, 6, 6)  # convs per stage (the stem is one more)
    widths: tuple[int, ...] = (16, 32, 64)  # conv output channels; CReLU doubles them
    init: str = "looks_linear"  # looks_linear: mirrored [W0, -W0] | orthogonal: independent weights
    norm: str = "batchnorm"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have the same, non-zero length")

    @property
    def depth(self) -> int:
        return 1 + sum(self.layers) + 1


class PlainLLNet(SkipNetwork):
    """stem unit -> stages of CReLU conv units -> average pool -> fc, no shortcuts."""

    input_kind = "image"

    def __init__(self, config: PlainLLConfig, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        norm = get_norm(config.norm)
        self.stem = CReLUConvUnit(in_channels, config.widths[0], norm=norm, mirrored=False)
        channels = 2 * config.widths[0]
        self.feature_info = [{"num_chs": channels, "reduction": 1, "module": "stem"}]
        self.stage_names: list[str] = []
        for index, (num, width) in enumerate(zip(config.layers, config.widths)):
            units = []
            for i in range(num):
                units.append(CReLUConvUnit(channels, width, 2 if index > 0 and i == 0 else 1, norm=norm))
                channels = 2 * width
            self.add_module(f"layer{index + 1}", nn.Sequential(*units))
            self.stage_names.append(f"layer{index + 1}")
            self.feature_info.append({"num_chs": channels, "reduction": 2**index, "module": f"layer{index + 1}"})
        self.num_features = channels
        self.fc = make_classifier(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, CReLUConvUnit):
                if self.config.init == "looks_linear":
                    m.looks_linear_init()
                else:
                    nn.init.orthogonal_(m.conv.weight)
        self._init_classifier()

    def _init_classifier(self) -> None:
        if isinstance(self.fc, nn.Linear):
            (looks_linear_ if self.config.init == "looks_linear" else nn.init.orthogonal_)(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 2 * widths[0], H, W)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x  # (B, 2 * widths[-1], H / 4, W / 4)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        self._init_classifier()

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        units: list[tuple[str, int, nn.Module]] = [("stem", 1, self.stem)]
        for stage, name in enumerate(self.stage_names, start=1):
            units += [(f"{name}.{i}", stage, unit) for i, unit in enumerate(getattr(self, name))]
        return units


def plain_ll_cifar(depth: int, init: str = "looks_linear") -> PlainLLConfig:
    n = (depth - 2) // 6
    return PlainLLConfig(layers=(2 * n,) * 3, init=init)


MODELS: dict[str, tuple[PlainLLConfig, str]] = {
    "plain_ll_cifar20": (plain_ll_cifar(20), "Plain CIFAR-20 with CReLU and looks-linear init (Balduzzi et al. 2017)"),
    "plain_ll_cifar56": (plain_ll_cifar(56), "Plain CIFAR-56 with CReLU and looks-linear init (Balduzzi et al. 2017)"),
    "plain_crelu_cifar56": (plain_ll_cifar(56, "orthogonal"), "Plain CIFAR-56 with CReLU, independent orthogonal init"),
}

for _name, (_config, _text) in MODELS.items():
    register_model(
        _name, PlainLLNet, _config, num_classes=10, input_size=(3, 32, 32), family="looks-linear", description=_text
    )
