"""Looks-linear initialisation (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the
answer, then what is the question?", section 5).

Gradients of deep plain ReLU networks at initialisation look like white noise ("shatter"); ResNets resist
this. The paper's remedy for plain nets: use the concatenated ReLU, CReLU(x) = [relu(x), relu(-x)]
(Shang et al. 2016), and initialise the next layer with mirrored weights W = [W0, -W0]. Then

    W CReLU(x) = W0 relu(x) - W0 relu(-x) = W0 x,

so the whole network computes a linear function at initialisation (affine, with biases and BN in eval
mode) and its gradients are those of a linear net: not shattered. Training then bends it away from linear.
W0 is orthogonal, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.factory import NormLayer
from resnets.layers.residual import ResidualUnit
from resnets.layers.skip_unit import UnitShape


class CReLU(nn.Module):
    """[relu(x), relu(-x)] along the channel dimension: doubles the channels."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=self.dim)  # (B, 2C, ...)


@torch.no_grad()
def looks_linear_(weight: torch.Tensor) -> torch.Tensor:
    """Set ``weight`` (out, 2C, ...) to [W0, -W0] along dim 1, with W0 (out, C, ...) orthogonal."""
    if weight.shape[1] % 2:
        raise ValueError(f"looks-linear weights need an even input dimension, got shape {tuple(weight.shape)}")
    half = weight.shape[1] // 2
    w0 = torch.empty_like(weight[:, :half])
    nn.init.orthogonal_(w0)
    weight[:, :half] = w0
    weight[:, half:] = -w0
    return weight


class CReLUConvUnit(ResidualUnit):
    """A plain (shortcut-free) unit: CReLU(BN(conv3x3(x))); outputs 2 * ``out_channels`` channels.

    ``mirrored`` units take a CReLU output and get the looks-linear init; the first unit of a net, which
    sees the raw input, is not mirrored (its input was never doubled).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        norm: NormLayer = nn.BatchNorm2d,
        mirrored: bool = True,
    ) -> None:
        super().__init__(has_shortcut=False, io_shape=UnitShape(in_channels, 2 * out_channels, stride))
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = norm(out_channels)
        self.crelu = CReLU()
        self.mirrored = mirrored

    def looks_linear_init(self) -> None:
        if self.mirrored:
            looks_linear_(self.conv.weight)
        else:
            nn.init.orthogonal_(self.conv.weight)

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.bn(self.conv(x)), None  # (B, out_channels, H / stride, W / stride)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.crelu(y)  # (B, 2 * out_channels, H / stride, W / stride)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn.weight)
