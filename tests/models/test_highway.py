"""Highway networks: the gate formula, the near-carry start, the options, and the gates exposed."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.layers.factory import get_act, get_norm
from resnets.layers.highway import HighwayGate, highway_conv, highway_linear


def test_layer_computes_gated_sum_coupled_and_independent() -> None:
    x = torch.randn(4, 16)
    for carry in ("coupled", "independent"):
        layer = highway_linear(16, act=get_act("relu"), carry=carry)
        h, t = layer.transform(x), layer.transform_gate(x)
        c = 1 - t if carry == "coupled" else layer.carry_gate(x)
        assert torch.allclose(layer(x), h * t + x * c, atol=1e-6)
    assert layer.carry_gate.affine.bias.eq(2.0).all(), "independent carry starts open (bias -gate_bias)"


def test_gate_bias_starts_negative_and_layer_starts_near_carry() -> None:
    layer = highway_linear(50, act=get_act("relu"))
    assert layer.transform_gate.affine.bias.eq(-2.0).all()
    x = torch.randn(256, 50)
    with torch.no_grad():
        t = layer.transform_gate(x)
        y = layer(x)
    # sigmoid(-2) = 0.119: on average the layer transforms about an eighth of its input.
    assert 0.08 < t.mean().item() < 0.16
    assert (y - x).abs().mean() < 0.25 * x.abs().mean()


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_very_negative_gate_bias_is_exactly_the_carry(kind: str) -> None:
    if kind == "linear":
        layer, x = highway_linear(32, act=get_act("relu"), gate_bias=-30.0), torch.randn(8, 32)
    else:
        layer = highway_conv(8, act=get_act("relu"), norm=get_norm("identity"), gate_bias=-30.0)
        x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(layer(x), x, atol=1e-6, rtol=0)


def test_whole_network_starts_near_identity_with_very_negative_bias() -> None:
    model = create_model("highway_fc_50", gate_bias=-30.0).eval()
    x = torch.randn(4, 784)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), model.stem(x), atol=1e-5)


def test_gates_are_listed_and_hookable() -> None:
    model = create_model("highway_cifar19")
    blocks = model.residual_blocks()
    assert len(blocks) == 15 and [b.stage for b in blocks] == [1] * 5 + [2] * 5 + [3] * 5
    gates = []
    handle = blocks[7].module.transform_gate.register_forward_hook(lambda m, i, out: gates.append(out))
    model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert gates[0].shape == (2, 64, 16, 16) and ((gates[0] > 0) & (gates[0] < 1)).all()
    assert all(isinstance(b.module.transform_gate, HighwayGate) for b in blocks)


def test_depths_and_options() -> None:
    assert len(create_model("highway_fc_100").residual_blocks()) == 98
    assert create_model("highway_cifar32").config.depth == 32
    model = create_model("highway_fc_10", carry="independent", width=71, in_channels=20, num_classes=3)
    assert model(torch.randn(2, 20)).shape == (2, 3)
    with pytest.raises(ValueError, match="carry"):
        create_model("highway_fc_10", carry="free")
