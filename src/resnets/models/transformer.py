"""Residual Transformers: a small ViT-style image classifier and a sequence encoder, with the norm placed
before (pre, GPT-2/ViT) or after (post, the original Transformer) each residual sum.

Both embed their input as tokens (B, T, D), add a learned position embedding, run ``depth`` blocks of
attention + MLP sublayers (``resnets.layers.transformer_block``), and classify a pooled token: the class
token (ViT, Dosovitskiy et al. 2021) or the mean of the tokens. Pre-norm models end with a LayerNorm;
post-norm ones do not need it, as their last sum is already normalised.

``residual_blocks()`` lists every sublayer (``blocks.<i>.attn`` and ``blocks.<i>.mlp``): each is one skip
connection. The models are small (dim 64-128, 6 blocks) so that they train on a CPU; later instruments
compare how deep each norm placement can be trained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from resnets.errors import InputShapeError
from resnets.layers.drop_path import linear_drop_rates
from resnets.layers.factory import get_act
from resnets.layers.transformer_block import NORM_PLACEMENTS, TransformerBlock
from resnets.models.base import SkipNetwork, is_tracing, make_classifier
from resnets.models.options import refuse_inapplicable
from resnets.models.registry import register_model

POOLS = ("cls", "mean")


@dataclass(frozen=True)
class TransformerConfig:
    """The shared trunk of both models; ``img_size``/``patch_size`` matter for images, ``max_tokens`` for sequences.

    Each model class refuses the fields it cannot use (``check_config``): the config alone does not know its model.
    """

    dim: int = 128
    depth: int = 6  # blocks; each has two residual sublayers
    num_heads: int = 4
    mlp_ratio: float = 2.0  # MLP hidden width = mlp_ratio * dim
    norm_placement: str = "pre"  # pre: x + F(LN(x)) | post: LN(x + F(x))
    pool: str = "cls"  # cls: a learned class token | mean: average of the tokens
    img_size: int = 32  # images: square side in pixels
    patch_size: int = 4  # images: square patch side; tokens = (img_size / patch_size)^2
    max_tokens: int = 28  # sequences: longest sequence the position embedding covers
    drop_path_rate: float = 0.0  # stochastic depth of the last block, decaying linearly to 0
    act: str = "gelu"

    def __post_init__(self) -> None:
        if self.norm_placement not in NORM_PLACEMENTS:
            raise ValueError(f"norm_placement must be one of {list(NORM_PLACEMENTS)}, got {self.norm_placement!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {list(POOLS)}, got {self.pool!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")


class _TransformerClassifier(SkipNetwork):
    """Tokens -> [class token] + position embedding -> blocks -> final norm (pre) -> pool -> Linear."""

    classifier_name = "head"
    final_norm_name = "norm"

    def __init__(self, config: TransformerConfig, num_tokens: int, num_classes: int) -> None:
        super().__init__()
        self.check_config(config)
        self.config, self.num_classes = config, num_classes
        dim = config.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + (config.pool == "cls"), dim))
        act = get_act(config.act)
        rates = linear_drop_rates(config.drop_path_rate, config.depth)
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(
                    dim, config.num_heads, config.mlp_ratio, placement=config.norm_placement, act=act, drop_path=rate
                )
                for rate in rates
            )
        )
        self.norm = nn.LayerNorm(dim) if config.norm_placement == "pre" else nn.Identity()
        self.num_features = dim
        self.head = make_classifier(dim, num_classes)
        # One feature point per block (both sublayers), as timm's ViT; no entry for the embedding.
        self.feature_info = [{"num_chs": dim, "reduction": 1, "module": f"blocks.{i}"} for i in range(config.depth)]

    def _init_weights(self) -> None:
        """ViT's initialisation: truncated normal (std 0.02) for weights and embeddings, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The input as tokens (B, T, dim), before the class token and position embedding."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)  # (B, T, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + T, D)
        x = x + self.pos_embed[:, : x.shape[1]]
        return self.norm(self.blocks(x))  # (B, [1 +] T, D)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = features[:, 0] if self.cls_token is not None else features.mean(dim=1)  # (B, D)
        return x if pre_logits else self.head(x)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        units = []
        for i, block in enumerate(self.blocks):
            units += [(f"blocks.{i}.attn", 1, block.attn), (f"blocks.{i}.mlp", 1, block.mlp)]
        return units


class VisionTransformer(_TransformerClassifier):
    """ViT (Dosovitskiy et al. 2021) at CIFAR scale: non-overlapping patches embedded by a strided conv."""

    input_kind = "image"

    @classmethod
    def check_config(cls, config: TransformerConfig) -> None:
        """Images are cut into patches; ``max_tokens`` (the sequence length) means nothing here."""
        if config.img_size % config.patch_size:
            raise ValueError(f"img_size {config.img_size} must be a multiple of patch_size {config.patch_size}")
        refuse_inapplicable(config, {"max_tokens": "image models (VisionTransformer), only to sequence encoders"})

    def __init__(self, config: TransformerConfig, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(config, (config.img_size // config.patch_size) ** 2, num_classes)
        self.in_channels = in_channels
        self.patch_embed = nn.Conv2d(in_channels, config.dim, config.patch_size, stride=config.patch_size)
        for entry in self.feature_info:
            entry["reduction"] = config.patch_size
        self._init_weights()

    @property
    def intermediate_formats(self) -> tuple[str, ...]:
        """NCHW: the patch tokens as a (B, D, H/p, W/p) map (timm's default); NLC: the patch tokens (B, T, D)."""
        return ("NCHW", "NLC")

    def format_intermediate(self, feature: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """A block's output without the class token, as a map (NCHW) or as tokens (NLC), as timm's ViT."""
        tokens = feature[:, 1:] if self.cls_token is not None else feature  # (B, T, D)
        if output_fmt == "NLC":
            return tokens
        side = self.config.img_size // self.config.patch_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)  # (B, D, H/p, W/p)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        size = self.config.img_size
        if not is_tracing() and tuple(x.shape[-2:]) != (size, size):
            raise InputShapeError(
                f"{type(self).__name__} expects {size}x{size} images (its position embedding is for that size), "
                f"got {tuple(x.shape[-2:])}; resize the data or build the model with img_size={x.shape[-1]}"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, D, H/p, W/p) -> (B, T, D)


class SequenceEncoder(_TransformerClassifier):
    """A Transformer encoder over (B, T, in_channels) float features, e.g. the 28 rows of a 28x28 image."""

    input_kind = "sequence"

    @classmethod
    def check_config(cls, config: TransformerConfig) -> None:
        """Sequences are embedded token by token; the image size and patch size mean nothing here."""
        refuse_inapplicable(
            config, dict.fromkeys(("img_size", "patch_size"), "sequence models (SequenceEncoder), only to image models")
        )

    def __init__(self, config: TransformerConfig, *, num_classes: int = 10, in_channels: int = 28) -> None:
        super().__init__(config, config.max_tokens, num_classes)
        self.in_channels = in_channels
        self.token_embed = nn.Linear(in_channels, config.dim)
        self._init_weights()

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if not is_tracing() and x.shape[1] > self.config.max_tokens:
            raise InputShapeError(
                f"{type(self).__name__} takes at most {self.config.max_tokens} tokens, got {x.shape[1]}; "
                f"build the model with max_tokens={x.shape[1]}"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_embed(x)  # (B, T, in_channels) -> (B, T, D)


_VIT = TransformerConfig(dim=128, depth=6, num_heads=4, mlp_ratio=2.0, pool="cls", img_size=32, patch_size=4)
_SEQ = TransformerConfig(dim=64, depth=6, num_heads=4, mlp_ratio=2.0, pool="mean", max_tokens=28)

IMAGE_MODELS: dict[str, tuple[TransformerConfig, str]] = {
    "vit_tiny_patch4_32": (_VIT, "ViT for 32x32 images, 4x4 patches, dim 128, 6 pre-norm blocks, class token"),
    "vit_tiny_post_patch4_32": (
        replace(_VIT, norm_placement="post"),
        "ViT for 32x32 images as vit_tiny_patch4_32, with post-norm blocks (Vaswani et al. 2017)",
    ),
}
SEQUENCE_MODELS: dict[str, tuple[TransformerConfig, str]] = {
    "seq_encoder_pre_6": (_SEQ, "Transformer encoder over 28 tokens of 28 features, 6 pre-norm blocks (GPT-2 style)"),
    "seq_encoder_post_6": (
        replace(_SEQ, norm_placement="post"),
        "Transformer encoder over 28 tokens of 28 features, 6 post-norm blocks (Vaswani et al. 2017)",
    ),
}

for _name, (_config, _text) in IMAGE_MODELS.items():
    register_model(
        _name,
        VisionTransformer,
        _config,
        num_classes=10,
        input_size=(3, 32, 32),
        family="transformer",
        description=_text,
    )
for _name, (_config, _text) in SEQUENCE_MODELS.items():
    register_model(
        _name, SequenceEncoder, _config, num_classes=10, input_size=(28, 28), family="transformer", description=_text
    )
