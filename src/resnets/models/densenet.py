"""DenseNets (Huang et al. 2017) for ImageNet and CIFAR, and their named variants.

The ImageNet layout is torchvision's: ``features`` (conv0, norm0, relu0, pool0, denseblock1, transition1, ...,
norm5) and ``classifier``, so torchvision's DenseNet state dicts load unchanged and parameter counts are equal.
The CIFAR layout follows the paper's section 3 and its Lua code: the stem is a single 3x3 conv with
2 * growth_rate output channels (DenseNet-BC), with no norm, ReLU or pooling after it; three dense blocks of
equal size joined by compressing transitions; the final BN-ReLU (norm5), global average pool and classifier.

Each dense layer is a skip-connection unit (its input reaches every later layer of the block by
concatenation), so ``residual_blocks()`` lists the dense layers, with the index of their dense block as stage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnets.layers.dense import DenseBlock, Transition
from resnets.layers.factory import get_act, get_norm
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.options import refuse_inapplicable
from resnets.models.registry import register_model

STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class DenseNetConfig:
    """Everything that tells one DenseNet from another."""

    growth_rate: int = 32  # k: channels each dense layer adds
    block_config: tuple[int, ...] = (6, 12, 24, 16)  # dense layers per block
    num_init_features: int = 64  # channels out of the stem (2k for DenseNet-BC on CIFAR)
    bn_size: int = 4  # bottleneck width = bn_size * growth_rate (DenseNet-B)
    compression: float = 0.5  # theta: a transition keeps floor(theta * channels) (DenseNet-C)
    stem: str = "imagenet"  # imagenet: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool | cifar: one 3x3 conv
    drop_rate: float = 0.0  # dropout after each dense layer's 3x3 conv (the paper uses 0.2 without augmentation)
    memory_efficient: bool = False  # checkpoint the concat-BN-ReLU-conv1x1 of each layer (Pleiss et al. 2017)
    norm: str = "batchnorm"
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {self.stem!r}")
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {self.compression}")
        if not self.block_config or min(self.block_config) < 1:
            raise ValueError(
                f"block_config must list at least one block of at least one layer, got {self.block_config}"
            )
        if len(self.block_config) == 1:  # compression sets the transitions, which sit between dense blocks
            refuse_inapplicable(self, {"compression": "a DenseNet of one dense block, which has no transitions"})


class DenseNet(SkipNetwork):
    """features (stem, dense blocks and transitions, norm5) -> ReLU -> global average pool -> classifier."""

    classifier_name = "classifier"

    def __init__(self, config: DenseNetConfig, *, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        norm, act = get_norm(config.norm), get_act(config.act)
        channels = config.num_init_features
        if config.stem == "imagenet":
            stem = [
                ("conv0", nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False)),
                ("norm0", norm(channels)),
                ("relu0", act()),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))]
        self.features = nn.Sequential(OrderedDict(stem))
        # Feature 0 is the stem before its max-pool; then each dense block's output, before its transition.
        imagenet = config.stem == "imagenet"
        stem_out = "features.relu0" if imagenet else "features.conv0"
        self.feature_info = [{"num_chs": channels, "reduction": 2 if imagenet else 1, "module": stem_out}]
        reduction = 4 if imagenet else 1

        self.block_names: list[str] = []
        for index, num_layers in enumerate(config.block_config, start=1):
            block = DenseBlock(
                num_layers,
                channels,
                config.growth_rate,
                config.bn_size,
                drop_rate=config.drop_rate,
                memory_efficient=config.memory_efficient,
                norm=norm,
                act=act,
            )
            self.features.add_module(f"denseblock{index}", block)
            self.block_names.append(f"denseblock{index}")
            channels = block.out_channels
            self.feature_info.append(
                {"num_chs": channels, "reduction": reduction, "module": f"features.denseblock{index}"}
            )
            reduction *= 2
            if index < len(config.block_config):
                out_channels = int(channels * config.compression)
                self.features.add_module(f"transition{index}", Transition(channels, out_channels, norm=norm, act=act))
                channels = out_channels
        self.features.add_module("norm5", norm(channels))

        self.num_features = channels
        self.min_input_size = min_input_size(config)
        self.classifier = make_classifier(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation: He normal (fan-in) convs, unit BN scales, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # norm5 is the last BN; the ReLU after it belongs to the trunk (torchvision applies it in forward).
        return F.relu(self.features(x))  # (B, num_features, h, w)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if isinstance(self.classifier, nn.Linear):
            nn.init.zeros_(self.classifier.bias)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [
            (f"features.{block_name}.{layer_name}", stage, layer)
            for stage, block_name in enumerate(self.block_names, start=1)
            for layer_name, layer in getattr(self.features, block_name).items()
        ]


def min_input_size(config: DenseNetConfig) -> int:
    """The smallest height (and width) whose feature map survives every transition's 2x2/2 average pool.

    Each transition floors h/2, so the map entering the first needs h >= 2^transitions. The ImageNet stem
    (7x7/2 conv, 3x3/2 max-pool, both padded) turns s into ceil(s/4), so it needs s >= 4 (2^t - 1) + 1:
    29 for DenseNet-121, which is why 28x28 Fashion-MNIST is too small for it.
    """
    after_stem = 2 ** (len(config.block_config) - 1)
    return 4 * (after_stem - 1) + 1 if config.stem == "imagenet" else after_stem


def densenet_bc_cifar(depth: int, growth_rate: int) -> DenseNetConfig:
    """DenseNet-BC for CIFAR: (depth - 4) / 6 bottleneck layers per block, 3 blocks, stem of 2k channels."""
    n = (depth - 4) // 6
    return DenseNetConfig(
        growth_rate=growth_rate, block_config=(n, n, n), num_init_features=2 * growth_rate, stem="cifar"
    )


IMAGENET_MODELS: dict[str, tuple[DenseNetConfig, str]] = {
    "densenet121": (DenseNetConfig(), "DenseNet-121 (Huang et al. 2017), torchvision layout"),
    "densenet169": (DenseNetConfig(block_config=(6, 12, 32, 32)), "DenseNet-169, torchvision layout"),
    "densenet201": (DenseNetConfig(block_config=(6, 12, 48, 32)), "DenseNet-201, torchvision layout"),
}
CIFAR_MODELS: dict[str, tuple[DenseNetConfig, str]] = {
    "densenet_bc_100_12": (densenet_bc_cifar(100, 12), "DenseNet-BC (L=100, k=12) for CIFAR (Huang et al. 2017)"),
    "densenet_bc_190_40": (densenet_bc_cifar(190, 40), "DenseNet-BC (L=190, k=40) for CIFAR (Huang et al. 2017)"),
}

for _name, (_config, _text) in IMAGENET_MODELS.items():
    register_model(
        _name, DenseNet, _config, num_classes=1000, input_size=(3, 224, 224), family="densenet", description=_text
    )
for _name, (_config, _text) in CIFAR_MODELS.items():
    register_model(
        _name, DenseNet, _config, num_classes=10, input_size=(3, 32, 32), family="densenet", description=_text
    )
