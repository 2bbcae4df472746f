"""The residual unit's options: plain mode, residual scaling, stochastic depth, zero-init, v1 vs v1.5."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.layers.basic import BasicBlock
from resnets.layers.bottleneck import Bottleneck
from resnets.layers.drop_path import DropPath, linear_drop_rates
from resnets.layers.preact import PreActBasicBlock, PreActBottleneck
from tests.helpers import randomize_bn


def test_post_activation_block_adds_identity_then_relu() -> None:
    block = BasicBlock(8, 8).eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch + x), atol=1e-6)


def test_plain_block_outputs_relu_of_branch_only() -> None:
    block = BasicBlock(8, 8, shortcut="none").eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    branch, shortcut = block.residual_and_shortcut(x)
    assert shortcut is None
    assert torch.allclose(block(x), torch.relu(branch), atol=1e-6)


def test_preact_block_has_no_activation_after_the_sum() -> None:
    block = PreActBasicBlock(8, 8).eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    branch = block.conv2(torch.relu(block.bn2(block.conv1(torch.relu(block.bn1(x))))))
    out = block(x)
    assert torch.allclose(out, x + branch, atol=1e-6)
    assert (out < 0).any()  # no ReLU after the addition


@pytest.mark.parametrize("scale", [0.1, 0.3])
def test_residual_scaling_multiplies_the_branch(scale: float) -> None:
    block = BasicBlock(8, 8).eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    branch, _ = block.residual_and_shortcut(x)
    block.residual_scale = scale
    assert torch.allclose(block(x), torch.relu(scale * branch + x), atol=1e-6)


def test_inverse_sqrt_depth_scaling() -> None:
    model = create_model("resnet20", residual_scale="inv_sqrt_depth")
    assert [b.module.residual_scale for b in model.residual_blocks()] == [1 / math.sqrt(9)] * 9
    assert all(b.module.residual_scale == 0.2 for b in create_model("resnet20", residual_scale=0.2).residual_blocks())


def test_drop_path_is_identity_in_eval() -> None:
    layer = DropPath(0.5).eval()
    x = torch.randn(16, 4, 3, 3)
    assert torch.equal(layer(x), x)


def test_drop_path_drops_whole_samples_at_the_right_rate() -> None:
    p, n = 0.3, 20_000
    layer = DropPath(p).train()
    x = torch.rand(n, 2, 3, 3) + 0.5  # strictly positive, so a zero means "dropped"
    y = layer(x)
    dropped = (y == 0).flatten(1).all(1)
    kept = ~dropped
    # Every sample is either dropped whole or kept whole and rescaled by 1/(1-p).
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    assert (y[~kept] == 0).all()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.float().mean().item() - p) < 5 * sigma
    # The expectation over samples is unchanged.
    assert abs(y.mean().item() - x.mean().item()) < 0.02


def test_stochastic_depth_decays_linearly_with_depth() -> None:
    assert linear_drop_rates(0.5, 4) == [0.125, 0.25, 0.375, 0.5]
    model = create_model("resnet20", drop_path_rate=0.45)
    rates = [b.module.drop_path.p for b in model.residual_blocks()]
    assert rates == pytest.approx([0.45 * (i + 1) / 9 for i in range(9)])


@pytest.mark.parametrize(
    "block",
    [BasicBlock(8, 8), Bottleneck(32, 8), PreActBasicBlock(8, 8), PreActBottleneck(32, 8)],
    ids=["basic", "bottleneck", "preact_basic", "preact_bottleneck"],
)
def test_zero_init_makes_the_branch_output_zero(block: nn.Module) -> None:
    block.zero_init_last()
    x = torch.randn(2, block.conv1.in_channels, 6, 6)
    branch, shortcut = block.train().residual_and_shortcut(x)
    assert torch.count_nonzero(branch) == 0
    assert torch.equal(block(x), block.post(shortcut))


def test_zero_init_option_in_models() -> None:
    model = create_model("resnet56", zero_init_last=True)
    assert all(torch.count_nonzero(b.module.bn2.weight) == 0 for b in model.residual_blocks())
    assert all(torch.count_nonzero(b.module.bn2.weight) > 0 for b in create_model("resnet56").residual_blocks())


def test_v1_strides_the_first_1x1_and_v15_the_3x3() -> None:
    v15, v1 = create_model("resnet50"), create_model("resnet50", stride_in_1x1=True)
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    assert (v1.layer2[0].conv1.stride, v1.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    with torch.no_grad():
        assert v1.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_squeeze_excitation_gates_channels() -> None:
    model = create_model("se_resnet50")
    se = model.layer1[0].se
    assert se.fc1.out_channels == 256 // 16
    x = torch.randn(2, 256, 4, 4)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(se(x), x * gate, atol=1e-6)


def test_preact_block_without_norm_keeps_its_input_for_the_shortcut() -> None:
    """norm="identity" makes bn1 return x itself: the in-place ReLU must not overwrite the identity's input."""
    from resnets.layers.factory import get_act

    block = PreActBasicBlock(8, 8, norm=lambda channels: nn.Identity(), act=get_act("relu")).eval()
    x = torch.randn(2, 8, 6, 6)
    original = x.clone()
    with torch.no_grad():
        out = block(x)
        branch = block.conv2(torch.relu(block.conv1(torch.relu(original))))
    assert torch.equal(x, original)
    assert torch.allclose(out, original + branch, atol=1e-6)
