"""The named ResNet variants: a table of configs, registered once.

ImageNet models follow torchvision (parameter counts and state-dict keys equal); CIFAR models follow
He et al. 2015 section 4.2 (6n+2 layers, 16-32-64 channels, option A shortcuts); pre-activation models
follow He et al. 2016; Wide ResNets follow Zagoruyko & Komodakis 2016; ResNeXt-29 follows Xie et al. 2017.
"""

from __future__ import annotations

from dataclasses import replace

from resnets.models.registry import register_model
from resnets.models.resnet import ResNet, ResNetConfig

IMAGENET_INPUT = (3, 224, 224)
CIFAR_INPUT = (3, 32, 32)

_BASIC18 = ResNetConfig(block="basic", layers=(2, 2, 2, 2))
_BASIC34 = ResNetConfig(block="basic", layers=(3, 4, 6, 3))
_BOTTLE50 = ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3))
_BOTTLE101 = replace(_BOTTLE50, layers=(3, 4, 23, 3))

IMAGENET_MODELS: dict[str, tuple[ResNetConfig, str]] = {
    "resnet18": (_BASIC18, "ResNet-18 (He et al. 2015), torchvision layout"),
    "resnet34": (_BASIC34, "ResNet-34 (He et al. 2015), torchvision layout"),
    "resnet50": (_BOTTLE50, "ResNet-50 v1.5 (stride on the 3x3), torchvision layout"),
    "resnet101": (_BOTTLE101, "ResNet-101 v1.5, torchvision layout"),
    "resnet152": (replace(_BOTTLE50, layers=(3, 8, 36, 3)), "ResNet-152 v1.5, torchvision layout"),
    "wide_resnet50_2": (replace(_BOTTLE50, base_width=128), "Wide ResNet-50-2: bottlenecks twice as wide"),
    "wide_resnet101_2": (replace(_BOTTLE101, base_width=128), "Wide ResNet-101-2: bottlenecks twice as wide"),
    "resnext50_32x4d": (replace(_BOTTLE50, groups=32, base_width=4), "ResNeXt-50 32x4d (Xie et al. 2017)"),
    "resnext101_32x8d": (replace(_BOTTLE101, groups=32, base_width=8), "ResNeXt-101 32x8d (Xie et al. 2017)"),
    "se_resnet50": (replace(_BOTTLE50, se_reduction=16), "SE-ResNet-50 (Hu et al. 2018), reduction 16"),
    "resnet50d": (
        replace(_BOTTLE50, stem="deep", shortcut="D"),
        "ResNet-50-D (He et al. 2019): deep stem, avg-pool shortcut",
    ),
    "plain18": (replace(_BASIC18, shortcut="none"), "ResNet-18 without shortcuts (the paper's plain-18)"),
    "plain34": (replace(_BASIC34, shortcut="none"), "ResNet-34 without shortcuts (the paper's plain-34)"),
}


def cifar_resnet(depth: int, shortcut: str = "A") -> ResNetConfig:
    """He et al. 2015 CIFAR net: 6n+2 layers, three stages of n basic blocks at 16, 32, 64 channels."""
    n = (depth - 2) // 6
    return ResNetConfig(
        block="basic", layers=(n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut=shortcut
    )


def preact_cifar_resnet(depth: int, bottleneck: bool) -> ResNetConfig:
    """He et al. 2016 CIFAR net: 9n+2 layers with bottlenecks (16-32-64 planes, 64-128-256 out) or 6n+2 basic."""
    n = (depth - 2) // (9 if bottleneck else 6)
    block = "preact_bottleneck" if bottleneck else "preact_basic"
    return ResNetConfig(block=block, layers=(n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="B")


def wide_resnet(depth: int, k: int) -> ResNetConfig:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks at 16k, 32k, 64k channels."""
    n = (depth - 4) // 6
    return ResNetConfig(
        block="preact_basic",
        layers=(n, n, n),
        widths=(16 * k, 32 * k, 64 * k),
        stem="cifar",
        stem_width=16,
        shortcut="B",
    )


CIFAR_MODELS: dict[str, tuple[ResNetConfig, str]] = {
    **{
        f"resnet{d}": (cifar_resnet(d), f"CIFAR ResNet-{d} (He et al. 2015), option A shortcuts")
        for d in (20, 32, 44, 56, 110, 1202)
    },
    **{
        f"plain{d}": (cifar_resnet(d, "none"), f"CIFAR plain-{d}: ResNet-{d} without shortcuts")
        for d in (20, 32, 44, 56, 110)
    },
    "preact_resnet110": (
        preact_cifar_resnet(110, bottleneck=False),
        "Pre-activation ResNet-110 (He et al. 2016), basic blocks",
    ),
    "preact_resnet164": (
        preact_cifar_resnet(164, bottleneck=True),
        "Pre-activation ResNet-164 (He et al. 2016), bottlenecks",
    ),
    "preact_resnet1001": (
        preact_cifar_resnet(1001, bottleneck=True),
        "Pre-activation ResNet-1001 (He et al. 2016), bottlenecks",
    ),
    "wrn_16_8": (wide_resnet(16, 8), "Wide ResNet-16-8 (Zagoruyko & Komodakis 2016)"),
    "wrn_28_10": (wide_resnet(28, 10), "Wide ResNet-28-10 (Zagoruyko & Komodakis 2016)"),
    "wrn_40_4": (wide_resnet(40, 4), "Wide ResNet-40-4 (Zagoruyko & Komodakis 2016)"),
    "resnext29_8x64d": (
        ResNetConfig(
            block="bottleneck",
            layers=(3, 3, 3),
            widths=(64, 128, 256),
            stem="cifar",
            stem_width=64,
            groups=8,
            base_width=64,
        ),
        "ResNeXt-29 8x64d (Xie et al. 2017): one 3x3 conv stem of 64 channels, no max-pool",
    ),
}

for _name, (_config, _text) in IMAGENET_MODELS.items():
    register_model(
        _name, ResNet, _config, num_classes=1000, input_size=IMAGENET_INPUT, family="resnet-imagenet", description=_text
    )
for _name, (_config, _text) in CIFAR_MODELS.items():
    register_model(
        _name, ResNet, _config, num_classes=10, input_size=CIFAR_INPUT, family="resnet-cifar", description=_text
    )
