"""Dense connectivity (Huang et al. 2017, "Densely Connected Convolutional Networks").

Each dense layer sees the concatenation of every earlier feature map of its block and adds ``growth_rate``
new channels: x_l = H_l([x_0, x_1, ..., x_{l-1}]). Where a ResNet sums a layer's output into its input, a
DenseNet concatenates it, so every layer has a direct path to the loss and to the block's input.

The bottleneck layer (DenseNet-B) is BN-ReLU-conv1x1 (bn_size * growth channels) then BN-ReLU-conv3x3;
the transition (DenseNet-C) is BN-ReLU-conv1x1 (compressing channels) then 2x2 average pooling. Module
names (norm1, relu1, conv1, norm2, relu2, conv2; denselayer<i>; norm, relu, conv, pool) are torchvision's,
so torchvision's DenseNet state dicts load unchanged.

Memory-efficient mode (Pleiss et al. 2017, "Memory-Efficient Implementation of DenseNets") recomputes the
concatenation and the first BN-ReLU-conv in the backward pass with ``torch.utils.checkpoint`` instead of
storing them, so memory grows linearly rather than quadratically with the layers of a block.

A dense layer is a :class:`~resnets.layers.skip_unit.SkipUnit` whose join is a concatenation: its branch is
the new features, its shortcut the earlier feature maps that the block concatenates with them. So
``residual_scale`` multiplies the new features, and a lesioned layer contributes zeros of the same shape,
which keeps the block's channel count (the analogue of Veit et al. 2016's lesions). The concatenated
shortcut is built only while a tap reads it, so that memory-efficient training stores nothing more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnets.layers.checkpointing import checkpoint_module
from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.skip_unit import SkipUnit, UnitShape


class DenseLayer(SkipUnit):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3 over the concatenated inputs; returns only the new ``growth_rate`` maps.

    Its unit shape is its block's: ``in_channels`` before it, ``in_channels + growth_rate`` after it.
    """

    join = "concat"

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        *,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.ReLU,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(UnitShape(in_channels, in_channels + growth_rate), residual_scale=residual_scale)
        width = bn_size * growth_rate
        self.norm1 = norm(in_channels)
        self.relu1 = act()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = norm(width)
        self.relu2 = act()
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        """conv1(relu1(norm1(concat(inputs)))): the part whose activations checkpointing does not keep."""
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))  # (B, bn_size * growth, H, W)

    def residual_and_shortcut(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The new features and, only while a tap reads it, the concatenated inputs (else None)."""
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            # the shared checkpoint: norm1's running statistics move once, not again in the recomputation
            out = checkpoint_module(self.bottleneck, self, tuple(inputs), {})
        else:
            out = self.bottleneck(*inputs)
        out = self.conv2(self.relu2(self.norm2(out)))  # (B, growth, H, W)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out, (torch.cat(inputs, 1) if self.taps else None)  # (B, in_channels, H, W)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        branch, shortcut = self.residual_and_shortcut(inputs)
        return self.combine(branch, shortcut, None)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers (keys denselayer1..N); outputs the concatenation of input and all new maps."""

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        *,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_channels + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                norm=norm,
                act=act,
            )
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, in_channels + num_layers * growth, H, W)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1-avgpool2x2 between dense blocks: halves the resolution, compresses channels."""

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: NormLayer = nn.BatchNorm2d, act: ActLayer = nn.ReLU
    ) -> None:
        super().__init__()
        self.norm = norm(in_channels)
        self.relu = act()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)
