"""Residual Transformer blocks with the norm before or after the sum.

Each block is two residual units, self-attention then MLP, each a :class:`ResidualUnit`, so residual
scaling, stochastic depth and lesioning work as in the ResNets:

- ``post`` (the original Transformer, Vaswani et al. 2017): x = LN(x + F(x)). The norm sits on the
  residual path, so the identity is not clean: deep post-norm stacks need warm-up to train (Xiong et al.
  2020, "On Layer Normalization in the Transformer Architecture").
- ``pre`` (GPT-2, Radford et al. 2019; ViT): x = x + F(LN(x)), with one final LN after the last block. The
  identity path is untouched from input to output, as in pre-activation ResNets (He et al. 2016).
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.attention import SelfAttention
from resnets.layers.factory import ActLayer
from resnets.layers.mlp import Mlp
from resnets.layers.residual import ResidualUnit
from resnets.layers.skip_unit import UnitShape

NORM_PLACEMENTS = ("pre", "post")


class ResidualSublayer(ResidualUnit):
    """pre: y = x + F(norm(x)); post: y = norm(x + F(x)). ``branch`` is F (attention or MLP)."""

    def __init__(
        self,
        dim: int,
        branch: SelfAttention | Mlp,
        *,
        placement: str = "pre",
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        if placement not in NORM_PLACEMENTS:
            raise ValueError(f"norm placement must be one of {list(NORM_PLACEMENTS)}, got {placement!r}")
        super().__init__(drop_path, residual_scale, has_shortcut=True, io_shape=UnitShape(dim, dim))
        self.placement = placement
        self.norm = nn.LayerNorm(dim)
        self.branch = branch

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.placement == "pre":
            return self.branch(self.norm(x)), x  # (B, T, D) each
        return self.branch(x), x

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm(y) if self.placement == "post" else y

    def zero_init_last(self) -> None:
        self.branch.zero_init_output()

    def extra_repr(self) -> str:
        return f"placement={self.placement}, " + super().extra_repr()


class TransformerBlock(nn.Module):
    """attention sublayer then MLP sublayer, on (B, T, D) tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        placement: str = "pre",
        act: ActLayer = nn.GELU,
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.attn = ResidualSublayer(
            dim, SelfAttention(dim, num_heads), placement=placement, drop_path=drop_path, residual_scale=residual_scale
        )
        self.mlp = ResidualSublayer(
            dim,
            Mlp(dim, int(dim * mlp_ratio), act=act),
            placement=placement,
            drop_path=drop_path,
            residual_scale=residual_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))  # (B, T, D)
