"""Highway networks (Srivastava, Greff & Schmidhuber 2015): a fully connected family for vector data and a
convolutional family like the paper's CIFAR-10 nets, with their named variants.

Fully connected (the paper's section 3.1, MNIST): a plain layer projects the input to ``width`` units, then
``depth - 2`` highway layers, then the softmax classifier, so that ``depth`` counts every weight layer as the
paper's Figure 1 does. The paper used 50 units per highway layer (71 for its plain twins, to match parameters).

Convolutional (section 3.2, CIFAR-10): a 3x3 conv stem, stages of 3x3 highway layers, and a transition
between stages where the shape changes: a 2x2 max-pool halves the resolution and a 1x1 conv projects to the
next width. A highway layer cannot change the shape of its input (its carry is the input itself), so the
transition is a plain layer, as the paper's pooling layers are. Depth counts the stem, the highway layers,
the transitions and the classifier. The paper's exact CIFAR nets (FitNet-like, with maxout) are not
reproduced: ours keep the depth (19 and 32 layers) and a similar parameter budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from resnets.layers.factory import get_act, get_norm
from resnets.layers.highway import CARRY_OPTIONS, highway_conv, highway_linear
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.registry import register_model


def _check_carry(carry: str) -> None:
    if carry not in CARRY_OPTIONS:
        raise ValueError(f"carry must be one of {list(CARRY_OPTIONS)}, got {carry!r}")


@dataclass(frozen=True)
class HighwayMLPConfig:
    """A fully connected highway network."""

    depth: int = 10  # weight layers: input projection + (depth - 2) highway layers + classifier
    width: int = 50  # units per layer (50 in the paper's highway nets)
    gate_bias: float = -2.0  # initial transform-gate bias b_T
    carry: str = "coupled"  # coupled: C = 1 - T | independent: C has its own weights
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.depth < 3:
            raise ValueError(f"depth must be at least 3 (projection, one highway layer, classifier), got {self.depth}")
        _check_carry(self.carry)


class HighwayMLP(SkipNetwork):
    """x -> act(Linear) -> highway layers -> Linear classifier."""

    input_kind = "vector"

    def __init__(self, config: HighwayMLPConfig, *, num_classes: int = 10, in_channels: int = 784) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        act = get_act(config.act)
        self.stem = nn.Sequential(nn.Linear(in_channels, config.width), act())
        self.layers = nn.Sequential(
            *(
                highway_linear(config.width, act=act, gate_bias=config.gate_bias, carry=config.carry)
                for _ in range(config.depth - 2)
            )
        )
        self.num_features = config.width
        self.fc = make_classifier(config.width, num_classes)
        self.feature_info = [
            {"num_chs": config.width, "reduction": 1, "module": f"layers.{i}"} for i in range(len(self.layers))
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))  # (B, width)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [(f"layers.{i}", 1, layer) for i, layer in enumerate(self.layers)]


@dataclass(frozen=True)
class HighwayConvConfig:
    """A convolutional highway network: stages of 3x3 highway layers joined by pool + 1x1 projections."""

    layers: tuple[int, ...] = (5, 5, 5)  # highway layers per stage
    widths: tuple[int, ...] = (32, 64, 128)  # channels per stage; the stem outputs widths[0]
    gate_bias: float = -2.0
    carry: str = "coupled"
    norm: str = "identity"  # norm inside H; identity (no norm) as in the paper
    act: str = "relu"

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have the same, non-zero length")
        _check_carry(self.carry)

    @property
    def depth(self) -> int:
        return 1 + sum(self.layers) + (len(self.layers) - 1) + 1


class HighwayConvNet(SkipNetwork):
    """conv3x3 stem -> [transition ->] highway stage, per stage -> global average pool -> Linear."""

    input_kind = "image"

    def __init__(self, config: HighwayConvConfig, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        norm, act = get_norm(config.norm), get_act(config.act)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, config.widths[0], 3, padding=1), act())
        self.transitions = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c_in, c_out, 1), act())
            for c_in, c_out in zip(config.widths[:-1], config.widths[1:])
        )
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(
                    highway_conv(width, act=act, norm=norm, gate_bias=config.gate_bias, carry=config.carry)
                    for _ in range(num)
                )
            )
            for num, width in zip(config.layers, config.widths)
        )
        self.num_features = config.widths[-1]
        self.fc = make_classifier(self.num_features, num_classes)
        # The stem, then each stage after its transition: stage i works at 1 / 2^i of the input's side.
        self.feature_info = [{"num_chs": config.widths[0], "reduction": 1, "module": "stem"}] + [
            {"num_chs": width, "reduction": 2**i, "module": f"stages.{i}"} for i, width in enumerate(config.widths)
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, widths[0], H, W)
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = self.transitions[index - 1](x)  # (B, widths[index], H / 2^index, W / 2^index)
            x = stage(x)
        return x  # (B, widths[-1], h, w)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [
            (f"stages.{s}.{i}", s + 1, layer) for s, stage in enumerate(self.stages) for i, layer in enumerate(stage)
        ]


MLP_MODELS: dict[str, HighwayMLPConfig] = {f"highway_fc_{d}": HighwayMLPConfig(depth=d) for d in (10, 20, 50, 100)}
CONV_MODELS: dict[str, HighwayConvConfig] = {
    # 1 stem + 15 highway + 2 transitions + 1 classifier = 19 layers; about 2.0M parameters (paper: 2.3M).
    "highway_cifar19": HighwayConvConfig(layers=(5, 5, 5), widths=(32, 64, 128)),
    # 1 stem + 28 highway + 2 transitions + 1 classifier = 32 layers, thinner; about 0.9M parameters (paper: 1.25M).
    "highway_cifar32": HighwayConvConfig(layers=(10, 9, 9), widths=(16, 32, 64)),
}

for _name, _config in MLP_MODELS.items():
    register_model(
        _name,
        HighwayMLP,
        _config,
        num_classes=10,
        input_size=(784,),
        family="highway",
        description=(
            f"Fully connected highway net, {_config.depth} layers of {_config.width} units (Srivastava et al. 2015)"
        ),
    )
for _name, _config in CONV_MODELS.items():
    register_model(
        _name,
        HighwayConvNet,
        _config,
        num_classes=10,
        input_size=(3, 32, 32),
        family="highway",
        description=f"Convolutional highway net for CIFAR, {_config.depth} layers (Srivastava et al. 2015)",
    )
