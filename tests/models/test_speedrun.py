"""The speedrun network: its layout and compute by hand, its plain twin, its initialisation, patch whitening."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.layers.whitening import PatchWhitening, patch_rows
from resnets.models.profile import count_macs
from resnets.train import weighted_depth


def test_multiply_adds_match_a_hand_count_at_32_and_28_pixels() -> None:
    # RGB 32x32: whiten 2x2 (3 -> 24) at 31x31; each stage's entry conv runs before its pool, its unit after:
    # entry 24 -> 64 at 31x31, unit 64 at 15x15; 64 -> 256 at 15x15, unit at 7x7; 256 -> 256 at 7x7, unit at
    # 3x3; the classifier 256 -> 10. BN, GELU and pooling are not multiply-adds.
    def hand(c: int, s: int) -> int:
        w = s - 1
        total = w * w * 2 * c * 4 * (c * 4)  # whiten: 2*C*4 filters of C*2*2 weights
        sizes = [w, w // 2, w // 4]
        widths, channels = (64, 256, 256), 2 * c * 4
        for size, width in zip(sizes, widths):
            total += size * size * width * channels * 9  # entry conv at the stage's input size
            total += (size // 2) ** 2 * width * width * 9  # the unit after the pool
            channels = width
        return total + 256 * 10

    assert count_macs(create_model("speedrun"), (3, 32, 32)) == hand(3, 32) == 118_147_360
    assert count_macs(create_model("speedrun", in_channels=1), (1, 28, 28)) == hand(1, 28) == 82_310_944  # the main job
    assert count_macs(create_model("speedrun_plain"), (3, 32, 32)) == hand(3, 32)  # the same work


def test_units_are_residual_and_the_plain_twin_has_none() -> None:
    residual, plain = create_model("speedrun"), create_model("speedrun_plain")
    assert [b.name for b in residual.residual_blocks()] == ["layer1.1", "layer2.1", "layer3.1"]
    assert all(b.has_shortcut for b in residual.residual_blocks())
    assert not any(b.has_shortcut for b in plain.residual_blocks())
    assert weighted_depth(residual) == 1 + 3 + 3 + 1 == residual.config.depth
    deep = create_model("speedrun", layers=(2, 3, 2))
    assert len(deep.residual_blocks()) == 7 and weighted_depth(deep) == 1 + 3 + 7 + 1
    # A unit computes x + GELU(BN(conv(x))); lesioned, it passes x through.
    unit = residual.residual_blocks()[1]
    x = torch.randn(2, 256, 7, 7)
    module = unit.module.eval()
    expected = x + module.act(module.bn(module.conv(x)))
    assert torch.allclose(module(x), expected)
    with unit.lesioned():
        assert torch.equal(module(x), x)


def test_initialisation_is_dirac_with_frozen_bn_scales() -> None:
    model = create_model("speedrun")
    unit_conv = model.layer2[1].conv.weight
    identity = torch.zeros_like(unit_conv)
    nn.init.dirac_(identity)
    assert torch.equal(unit_conv, identity)  # a square conv starts as the identity
    entry = model.layer2[0].conv.weight  # 64 -> 256: its first 64 filters copy the input channels
    assert torch.equal(entry[:64], identity[:64, :64]) and entry[64:].abs().sum() > 0
    assert not model.layer1[0].bn.weight.requires_grad and model.layer1[0].bn.bias.requires_grad
    assert model.layer1[0].bn.momentum == pytest.approx(0.4) and model.layer1[0].bn.eps == 1e-12
    learned = create_model("speedrun", bn_scale=True, dirac_init=False)
    assert learned.layer1[0].bn.weight.requires_grad
    assert not torch.equal(learned.layer2[1].conv.weight, identity)


def test_head_is_a_global_max_pool_and_a_scaled_bias_free_linear() -> None:
    model = create_model("speedrun").eval()
    features = torch.randn(2, 256, 3, 3)
    expected = model.fc(features.amax(dim=(2, 3))) / 9
    assert torch.allclose(model.forward_head(features), expected)
    assert model.fc.bias is None
    model.reset_classifier(4)
    assert model.forward_head(features).shape == (2, 4) and model.fc.bias is None


def test_fitted_whitening_decorrelates_patches_to_unit_variance() -> None:
    # Correlated 2-channel images: the whitening conv's first half must map their 2x2 patches to covariance
    # diag(lambda / (lambda + eps)), close to the identity; the second half is its negative.
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 10, 10, generator=generator)
    images = torch.cat([base, 0.8 * base + 0.3 * torch.randn(64, 1, 10, 10, generator=generator)], 1)
    layer = PatchWhitening(2, kernel=2)
    layer.fit(images, eps=0.0)
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    with torch.no_grad():
        out = layer(images) - layer.bias[None, :, None, None]  # (N, 16, 9, 9)
    half = out[:, :8].permute(0, 2, 3, 1).reshape(-1, 8)
    covariance = half.T @ half / len(half)
    assert torch.allclose(covariance, torch.eye(8), atol=1e-3)
    assert torch.allclose(out[:, 8:], -out[:, :8])
    rows = patch_rows(images, 2)
    assert rows.shape == (64 * 9 * 9, 8) and torch.equal(rows[0], images[0, :, :2, :2].reshape(-1))
