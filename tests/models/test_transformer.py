"""Residual Transformers: the pre-norm identity path, post-norm placement, shapes and input checks."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.errors import InputShapeError
from resnets.layers.attention import SelfAttention
from resnets.layers.mlp import Mlp
from resnets.layers.transformer_block import ResidualSublayer, TransformerBlock


def test_pre_norm_block_is_exact_identity_when_branches_output_zero() -> None:
    block = TransformerBlock(32, 4, placement="pre")
    for sub in (block.attn, block.mlp):
        sub.zero_init_last()
    x = torch.randn(2, 7, 32)
    assert torch.equal(block(x), x)


def test_pre_norm_model_trunk_is_identity_when_all_branches_are_zero() -> None:
    model = create_model("seq_encoder_pre_6").eval()
    for unit in model.residual_blocks():
        unit.module.zero_init_last()
    x = torch.randn(2, 28, 28)
    tokens = model.embed(x) + model.pos_embed[:, :28]
    with torch.no_grad():
        assert torch.equal(model.blocks(tokens), tokens)
        assert torch.allclose(model.forward_features(x), model.norm(tokens), atol=1e-6)


def test_post_norm_sublayer_normalises_the_sum() -> None:
    sub = ResidualSublayer(16, Mlp(16, 32), placement="post")
    with torch.no_grad():
        sub.norm.weight.uniform_(0.5, 1.5)
        sub.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 5, 16)
    assert torch.allclose(sub(x), sub.norm(x + sub.branch(x)), atol=1e-6)
    sub.zero_init_last()  # a zero branch still leaves LN on the path: not the identity
    assert not torch.allclose(sub(x), x, atol=1e-3)


def test_pre_norm_sublayer_formula() -> None:
    sub = ResidualSublayer(16, SelfAttention(16, 2), placement="pre")
    x = torch.randn(3, 5, 16)
    assert torch.allclose(sub(x), x + sub.branch(sub.norm(x)), atol=1e-6)


def test_attention_matches_explicit_softmax() -> None:
    attn = SelfAttention(8, 2)
    x = torch.randn(2, 5, 8)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(head_dim) = 2
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_models_list_sublayers_and_check_shapes() -> None:
    vit = create_model("vit_tiny_patch4_32")
    assert [b.name for b in vit.residual_blocks()[:2]] == ["blocks.0.attn", "blocks.0.mlp"]
    assert vit.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 65, 128)  # class token + 8x8 patches
    with pytest.raises(InputShapeError, match="32x32"):
        vit(torch.randn(2, 3, 28, 28))
    post = create_model("vit_tiny_post_patch4_32")
    assert isinstance(post.norm, torch.nn.Identity) and post.blocks[0].attn.placement == "post"
    seq = create_model("seq_encoder_post_6", num_classes=4)
    assert seq(torch.randn(2, 20, 28)).shape == (2, 4), "shorter sequences are fine"
    with pytest.raises(InputShapeError):
        seq(torch.randn(2, 28, 27))
    with pytest.raises(InputShapeError, match="max_tokens"):
        seq(torch.randn(2, 29, 28))
    mean_vit = create_model("vit_tiny_patch4_32", pool="mean", in_channels=1)
    assert mean_vit.cls_token is None and mean_vit(torch.randn(2, 1, 32, 32)).shape == (2, 10)
