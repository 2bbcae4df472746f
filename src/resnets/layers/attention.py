"""Multi-head self-attention (Vaswani et al. 2017, "Attention Is All You Need"), the token-mixing branch of
a Transformer's residual blocks; PyTorch's fused ``scaled_dot_product_attention`` does the softmax(QK^T/sqrt(d))V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """qkv projection -> per-head scaled dot-product attention -> output projection ``proj``."""

    def __init__(self, dim: int, num_heads: int, *, attn_drop: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = float(attn_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, T, d/h)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # (B, T, D)

    def zero_init_output(self) -> None:
        """Zero the output projection so the attention branch starts as zero."""
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
