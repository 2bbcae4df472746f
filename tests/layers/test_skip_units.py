"""The shared skip-unit interface against hand computations: lesions, scaling and captures in every family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets.errors import LesionError, ResnetsError
from resnets.layers.basic import BasicBlock
from resnets.layers.dense import DenseBlock, DenseLayer
from resnets.layers.factory import get_act, get_norm
from resnets.layers.highway import HighwayLayer, highway_conv, highway_linear
from resnets.layers.looks_linear import CReLUConvUnit
from resnets.layers.mlp import Mlp
from resnets.layers.multi_residual import MultiResidualBlock
from resnets.layers.multi_skip import MultiSkipLayer
from resnets.layers.preact import PreActBasicBlock
from resnets.layers.residual import ResidualUnit
from resnets.layers.skip_unit import SkipUnit, UnitShape
from resnets.layers.transformer_block import ResidualSublayer
from tests.helpers import randomize_bn


def _highway(carry: str) -> HighwayLayer:
    return highway_linear(16, act=get_act("relu"), gate_bias=0.0, carry=carry)


def test_every_unit_kind_is_a_skip_unit() -> None:
    units = [
        BasicBlock(8, 8),
        PreActBasicBlock(8, 8),
        MultiResidualBlock(8, 8),
        CReLUConvUnit(8, 4),
        ResidualSublayer(16, Mlp(16, 32)),
        _highway("coupled"),
        DenseLayer(8, 4),
        MultiSkipLayer(8, (2,)),
    ]
    assert all(isinstance(u, SkipUnit) for u in units)
    assert all(isinstance(u, ResidualUnit) for u in units[:5])
    assert [u.num_branches for u in units] == [1, 1, 2, 1, 1, 1, 1, 1]
    assert [u.join for u in units] == ["add"] * 6 + ["concat", "add"]


@pytest.mark.parametrize("carry", ["coupled", "independent"])
def test_lesioned_highway_layer_outputs_its_carry(carry: str) -> None:
    layer, x = _highway(carry), torch.randn(4, 16)
    with torch.no_grad():
        t = layer.transform_gate(x)
        c = 1 - t if carry == "coupled" else layer.carry_gate(x)
        h = layer.transform(x)
        with layer.lesioned():
            lesioned = layer(x)
        assert torch.equal(lesioned, x * c)
        with layer.scaled(0.5):
            assert torch.equal(layer(x), (h * t) * 0.5 + x * c)
        with layer.tapped(lambda branch, shortcut: None):  # read: the sum of the two terms as built
            assert torch.equal(layer(x), h * t + x * c)
        # Restored; a coupled layer then fuses its sum into x + T * (H - x), equal up to rounding.
        assert torch.equal(layer(x), x + t * (h - x) if carry == "coupled" else h * t + x * c)
        assert torch.allclose(layer(x), h * t + x * c, atol=1e-6, rtol=0)
    assert layer.residual_scale == 1.0 and not layer.is_lesioned
    assert (lesioned - layer(x)).abs().max() > 0.1


def test_lesioned_conv_highway_layer_outputs_its_coupled_carry() -> None:
    layer = highway_conv(6, act=get_act("relu"), norm=get_norm("identity"), gate_bias=0.0)
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad(), layer.lesioned():
        assert torch.equal(layer(x), x * (1 - layer.transform_gate(x)))
    assert not layer.changes_shape and layer.io_shape == UnitShape(6, 6)


def test_lesioned_dense_layer_adds_zeros_and_the_block_keeps_its_channels() -> None:
    block = randomize_bn(DenseBlock(3, 8, growth_rate=4, bn_size=2))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        reference = block(x)
        with block.denselayer2.lesioned():
            lesioned = block(x)
        f1 = block.denselayer1([x])
        zeros = torch.zeros_like(f1)
        expected_f3 = block.denselayer3([x, f1, zeros])
        assert torch.equal(block(x), reference), "restored"
    assert lesioned.shape == reference.shape == (2, 8 + 3 * 4, 6, 6)
    assert torch.equal(lesioned[:, :12], reference[:, :12]), "input and the first layer's maps are untouched"
    assert torch.count_nonzero(lesioned[:, 12:16]) == 0 and torch.count_nonzero(reference[:, 12:16]) > 0
    assert torch.equal(lesioned[:, 16:], expected_f3), "the last layer sees zeros in place of layer 2's maps"
    assert block.denselayer2.changes_shape and block.denselayer2.has_shortcut


def test_scaled_dense_layer_scales_its_new_features() -> None:
    layer = randomize_bn(DenseLayer(8, 4, bn_size=2))
    inputs = [torch.randn(2, 5, 4, 4), torch.randn(2, 3, 4, 4)]
    with torch.no_grad():
        new = layer(inputs)
        with layer.scaled(0.5):
            assert torch.equal(layer(inputs), new * 0.5)
        with layer.capture() as seen:
            layer(inputs)
    assert torch.equal(seen.branch, new) and torch.equal(seen.shortcut, torch.cat(inputs, 1))


def test_dense_layer_builds_the_concatenated_shortcut_only_for_taps() -> None:
    layer = DenseLayer(8, 4, memory_efficient=True)
    inputs = [torch.randn(2, 8, 4, 4, requires_grad=True)]
    assert layer.residual_and_shortcut(inputs)[1] is None
    with layer.capture() as seen:
        out = layer(inputs)
    out.sum().backward()  # checkpointing still works with a tap
    assert torch.equal(seen.shortcut, inputs[0].detach()) and inputs[0].grad is not None


def test_lesioned_multi_skip_layer_outputs_act_of_its_skips() -> None:
    layer = MultiSkipLayer(6, (2, 3), norm=nn.LayerNorm)
    history = [torch.randn(3, 6) for _ in range(4)]
    with torch.no_grad():
        skips = layer.skips["k2"](history[-2]) + layer.skips["k3"](history[-3])
        z = layer.norm(layer.linear(history[-1]))
        with layer.lesioned():
            assert torch.equal(layer(history), torch.relu(skips))
        with layer.scaled(0.5):
            assert torch.equal(layer(history), torch.relu(z * 0.5 + skips))
        # Untouched, the layer adds its skips one by one, as before the skip-unit interface.
        expected = torch.relu((z + layer.skips["k2"](history[-2])) + layer.skips["k3"](history[-3]))
        assert torch.equal(layer(history), expected)
        with layer.tapped(lambda branch, shortcut: None):
            assert torch.allclose(layer(history), expected, atol=1e-6, rtol=0)


def test_lesioned_identity_skip_does_not_touch_the_history_in_place() -> None:
    layer, history = MultiSkipLayer(6, (2,)), [torch.randn(3, 6) for _ in range(3)]
    before = [h.clone() for h in history]
    with torch.no_grad(), layer.lesioned():
        out = layer(history)
    assert torch.equal(out, torch.relu(before[-2]))
    assert all(torch.equal(h, b) for h, b in zip(history, before)), "the inplace ReLU acted on a copy"


def test_multi_skip_layer_without_skips_becomes_the_identity() -> None:
    layer, history = MultiSkipLayer(6, ()), [torch.randn(3, 6), torch.randn(3, 6)]
    assert not layer.has_shortcut and not layer.changes_shape
    with layer.lesioned(), layer.capture() as seen:
        assert layer(history) is history[-1]
    assert seen.shortcut is None and seen.branch.shape == (3, 6)


def test_multi_residual_block_lesions_one_branch_at_a_time() -> None:
    block = randomize_bn(MultiResidualBlock(8, 8, num_residuals=2))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        f0, f1 = block.branches[0](x), block.branches[1](x)
        with block.lesioned(branch=0):
            assert torch.equal(block(x), torch.relu(x + f1))
            with block.lesioned(branch=1):  # every branch lesioned: the unit is
                assert block.is_lesioned and torch.equal(block(x), torch.relu(x))
            assert block.lesioned_branches == (0,)
        with block.lesioned():
            assert torch.equal(block(x), torch.relu(x))
        assert torch.equal(block(x), torch.relu(f0 + f1 + x))
    with pytest.raises(LesionError, match="branch 2 .* 2 branch"), block.lesioned(branch=2):
        pass


def test_multi_residual_block_with_projection_keeps_its_shortcut_when_a_branch_is_lesioned() -> None:
    block = randomize_bn(MultiResidualBlock(8, 16, 2, num_residuals=3, shortcut="A"))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad(), block.lesioned(branch=1):
        expected = torch.relu((block.branches[0](x) + block.branches[2](x)) + block.downsample(x))
        assert torch.equal(block(x), expected)


def test_plain_block_lesioned_is_the_identity_when_shapes_match() -> None:
    block = randomize_bn(BasicBlock(8, 8, shortcut="none"))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad(), block.lesioned():
        out = block(x)
    assert torch.equal(out, x)
    assert not block.has_shortcut and not block.changes_shape


def test_plain_block_that_changes_the_shape_refuses_a_lesion() -> None:
    block = BasicBlock(16, 32, 2, shortcut="none")
    assert block.changes_shape and str(block.io_shape) == "16 -> 32 channels, stride 2"
    with pytest.raises(LesionError) as error, block.lesioned(name="layer2.0"):
        pass
    message = str(error.value)
    assert "'layer2.0'" in message and "(16 -> 32 channels, stride 2)" in message and "\n" not in message
    assert isinstance(error.value, ResnetsError) and isinstance(error.value, ValueError)
    assert not block.is_lesioned and block.lesioned_branches == ()
    with pytest.raises(LesionError, match="64 channels, stride 2"):
        BasicBlock(64, 64, 2, shortcut="none").lesion()


def test_crelu_units_become_the_identity_only_without_a_shape_change() -> None:
    same, doubling = CReLUConvUnit(8, 4).eval(), CReLUConvUnit(3, 16, mirrored=False)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad(), same.lesioned():
        assert torch.equal(same(x), x)
    with pytest.raises(LesionError, match="3 -> 32 channels"):
        doubling.lesion()


def test_basic_block_capture_returns_the_branch_and_the_shortcut() -> None:
    x = torch.randn(2, 8, 6, 6)
    for block in (randomize_bn(BasicBlock(8, 8)), randomize_bn(BasicBlock(8, 16, 2, shortcut="B"))):
        with torch.no_grad():
            branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
            shortcut = x if block.downsample is None else block.downsample(x)
            with block.capture() as seen:
                out = block(x)
        assert seen.calls == 1 and torch.equal(seen.branch, branch) and torch.equal(seen.shortcut, shortcut)
        assert torch.equal(out, torch.relu(branch + shortcut))
        assert not block.taps


def test_capture_copies_what_a_plain_block_then_changes_in_place() -> None:
    block = randomize_bn(BasicBlock(8, 8, shortcut="none"))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad(), block.capture() as seen:
        out = block(x)
    assert seen.shortcut is None and (seen.branch < 0).any(), "the post ReLU acted on F(x) itself, not the copy"
    assert torch.equal(out, torch.relu(seen.branch))


def test_preact_capture_reads_the_projection_of_the_activated_input() -> None:
    block = randomize_bn(PreActBasicBlock(8, 16, 2))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad(), block.capture() as seen:
        out = block(x)
        assert torch.equal(seen.shortcut, block.downsample(torch.relu(block.bn1(x))))
    assert torch.equal(out, seen.branch + seen.shortcut)
    with torch.no_grad(), block.lesioned():
        assert torch.equal(block(x), seen.shortcut), "pre-activation: nothing follows the sum"


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_lesioned_transformer_sublayer_outputs_post_of_its_input(placement: str) -> None:
    sub = ResidualSublayer(16, Mlp(16, 32), placement=placement)
    x = torch.randn(2, 5, 16)
    with torch.no_grad(), sub.lesioned():
        out = sub(x)
    assert torch.equal(out, x if placement == "pre" else sub.norm(x))


def test_scaled_basic_block_and_identity_lesion_in_training() -> None:
    block = BasicBlock(8, 8).train()
    x = (torch.randn(2, 8, 6, 6).abs() + 0.1).requires_grad_()  # positive, as after a ReLU
    with torch.no_grad():
        branch, _ = block.residual_and_shortcut(x)
        with block.scaled(0.5):
            assert torch.equal(block(x), torch.relu(branch * 0.5 + x))
    with block.lesioned():
        out = block(x)
    assert torch.equal(out, x)  # relu(x) = x for x > 0: the lesioned block passes its input on
    out.sum().backward()  # the block's in-place ReLU acted on a copy of x, so autograd is intact
    assert torch.equal(x.grad, torch.ones_like(x))


def test_state_is_restored_after_an_exception_in_the_with_block() -> None:
    block = BasicBlock(8, 8, residual_scale=0.3)
    with pytest.raises(RuntimeError, match="boom"), block.lesioned(), block.scaled(0.0), block.capture():
        assert block.is_lesioned and block.residual_scale == 0.0 and len(block.taps) == 1
        raise RuntimeError("boom")
    assert not block.is_lesioned and block.lesioned_branches == () and block.residual_scale == 0.3
    assert block.taps == []
