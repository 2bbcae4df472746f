"""Residual MLPs: fixed skips are parameter-free and exact, learned skips follow the backpropagation rule."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.layers.multi_skip import IdentitySkip, LearnedSkip


def _activations(model, x: torch.Tensor) -> list[torch.Tensor]:
    """a^0, a^1, ..., a^depth, recorded with forward hooks."""
    acts: list[torch.Tensor] = []
    hooks = [model.stem.register_forward_hook(lambda m, i, out: acts.append(out))]
    hooks += [layer.register_forward_hook(lambda m, i, out: acts.append(out)) for layer in model.layers]
    model(x)
    for h in hooks:
        h.remove()
    return acts


def test_fixed_skips_have_no_parameters_and_nothing_changes_them() -> None:
    plain, fixed = create_model("resmlp_plain_20"), create_model("resmlp_multiskip_20")
    assert sum(p.numel() for p in fixed.parameters()) == sum(p.numel() for p in plain.parameters())
    skips = [s for layer in fixed.layers for s in layer.skips.values()]
    assert len(skips) == 0 + 1 + 2 + 3 * 17 and all(isinstance(s, IdentitySkip) for s in skips)
    assert not any("skips" in key for key in fixed.state_dict())
    optimizer = torch.optim.SGD(fixed.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(fixed(torch.randn(8, 784)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
    x = torch.randn(3, 128)
    assert all(
        torch.equal(s(x), x * (1.0 / len(layer.distances))) for layer in fixed.layers for s in layer.skips.values()
    )


def test_identity_skip_is_exact_when_the_branch_is_zero() -> None:
    for norm in ("identity", "layernorm"):
        model = create_model("resmlp_identity_20", norm=norm, depth=6)
        with torch.no_grad():
            for layer in model.layers:
                layer.linear.weight.zero_()
                layer.linear.bias.zero_()
            acts = _activations(model, torch.randn(4, 784))
        assert torch.equal(acts[1], torch.zeros_like(acts[1])), "layer 1 has no layer two below it: g(0)"
        for l in range(2, 7):
            assert torch.equal(acts[l], torch.relu(acts[l - 2])), f"a^{l} = g(a^{l - 2}) exactly"


def test_learned_skips_start_as_identity_and_are_updated() -> None:
    model = create_model("resmlp_learned_20")
    skip = model.layers[5].skips["k2"]
    assert isinstance(skip, LearnedSkip) and torch.equal(skip.weight, torch.eye(128))
    before = skip.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 784)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()
    assert not torch.equal(skip.weight, before)


def test_learned_skip_gradient_is_delta_times_activation_transposed() -> None:
    """Tiny 3-layer net, bare formula: dL/dW^{l-2,l} = sum over the batch of delta^l (a^{l-2})^T."""
    model = create_model(
        "resmlp_learned_20", depth=3, width=5, in_channels=4, num_classes=3, norm="identity", learned_init="random"
    )
    x, c = torch.randn(6, 4), torch.randn(6, 3)
    (model(x) * c).sum().backward()

    with torch.no_grad():  # the forward pass, by hand
        a0 = torch.relu(model.stem[0](x))
        layer1, layer2, layer3 = model.layers
        a1 = torch.relu(a0 @ layer1.linear.weight.T + layer1.linear.bias)
        s02, s13 = layer2.skips["k2"].weight, layer3.skips["k2"].weight
        pre2 = a1 @ layer2.linear.weight.T + layer2.linear.bias + a0 @ s02.T
        a2 = torch.relu(pre2)
        pre3 = a2 @ layer3.linear.weight.T + layer3.linear.bias + a1 @ s13.T
        # backward, by hand: delta^3 = (W_fc^T c) * g'(pre^3); delta^2 = (W^{2,3})^T delta^3 * g'(pre^2)
        delta3 = (c @ model.fc.weight) * (pre3 > 0)
        delta2 = (delta3 @ layer3.linear.weight) * (pre2 > 0)
        expected13, expected02 = delta3.T @ a1, delta2.T @ a0
    assert delta3.abs().sum() > 0 and delta2.abs().sum() > 0
    assert torch.allclose(layer3.skips["k2"].weight.grad, expected13, atol=1e-5)
    assert torch.allclose(layer2.skips["k2"].weight.grad, expected02, atol=1e-5)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="skips"):
        create_model("resmlp_identity_20", skips=(1,))
    with pytest.raises(ValueError, match="skip_kind"):
        create_model("resmlp_identity_20", skip_kind="frozen")
    assert create_model("resmlp_identity_20", in_channels=12, num_classes=2)(torch.randn(2, 12)).shape == (2, 2)


def test_residual_scale_multiplies_z_in_every_layer_with_a_skip() -> None:
    """Bare formula, s = 0.3: a^1 = g(z^1) (no skip, not scaled), a^l = g(0.3 z^l + a^{l-2}) for l >= 2."""
    torch.manual_seed(0)
    model = create_model(
        "resmlp_identity_20", depth=4, width=5, in_channels=4, num_classes=3, norm="identity", residual_scale=0.3
    )
    x = torch.randn(6, 4)
    with torch.no_grad():
        acts = [torch.relu(model.stem[0](x))]
        for l, layer in enumerate(model.layers, start=1):
            z = acts[-1] @ layer.linear.weight.T + layer.linear.bias
            acts.append(torch.relu(z) if l == 1 else torch.relu(0.3 * z + acts[-2]))
        expected = acts[-1] @ model.fc.weight.T + model.fc.bias
        assert torch.allclose(model(x), expected, atol=1e-6)
        blocks = model.residual_blocks()
        assert [b.unit.residual_scale for b in blocks] == [1.0, 0.3, 0.3, 0.3]
        with blocks[2].capture() as seen:  # through the unit interface: output = g(shortcut + s * branch)
            out = blocks[2].module([acts[0], acts[1], acts[2]])
        assert torch.allclose(out, torch.relu(seen.shortcut + 0.3 * seen.branch), atol=1e-6)
        assert torch.allclose(seen.shortcut, acts[1]) and torch.allclose(out, acts[3], atol=1e-6)


def test_residual_scale_inv_sqrt_depth_defaults_and_refusals() -> None:
    scaled = create_model("resmlp_identity_20", depth=10, residual_scale="inv_sqrt_depth")
    assert [b.unit.residual_scale for b in scaled.residual_blocks()] == [1.0] + [1 / 3] * 9  # L = 9 layers with a skip
    multi = create_model("resmlp_multiskip_20", depth=6, residual_scale="inv_sqrt_depth")  # skips 2, 3, 4: l >= 2
    assert [b.unit.residual_scale for b in multi.residual_blocks()] == [1.0] + [0.2**0.5] * 5
    torch.manual_seed(1)
    default = create_model("resmlp_identity_20")
    torch.manual_seed(1)
    one = create_model("resmlp_identity_20", residual_scale=1.0)
    x = torch.randn(3, 784)
    assert torch.equal(default(x), one(x))  # scale 1 leaves the outputs bit for bit
    with pytest.raises(ValueError, match="residual_scale"):
        create_model("resmlp_plain_20", residual_scale=0.5)
    with pytest.raises(ValueError, match="inv_sqrt_depth"):
        create_model("resmlp_identity_20", residual_scale="half")


#: The formula's hand count for 20 layers: a skip of distance k enters every layer l >= k (a^0 counts), so
#: skips=(2,) reaches layers 2..20 (19 skips, not the 10 of every second layer), and skips=(2, 3, 4) reaches
#: layer 2 with {2}, layer 3 with {2, 3} and layers 4..20 with {2, 3, 4}: 1 + 2 + 3 * 17 = 54 skips.
SKIPS_BY_LAYER = {
    "resmlp_identity_20": {1: ()} | {l: (2,) for l in range(2, 21)},
    "resmlp_multiskip_20": {1: (), 2: (2,), 3: (2, 3)} | {l: (2, 3, 4) for l in range(4, 21)},
}


@pytest.mark.parametrize(("name", "total"), [("resmlp_identity_20", 19), ("resmlp_multiskip_20", 54)])
def test_every_layer_from_k_on_receives_the_skip_of_distance_k(name: str, total: int) -> None:
    """From the modules: which layers receive which skips, and their weights (1/m for the m entering)."""
    model = create_model(name)
    expected = SKIPS_BY_LAYER[name]
    got = {l: layer.distances for l, layer in enumerate(model.layers, start=1)}
    assert got == expected
    assert {l: tuple(sorted(layer.skips)) for l, layer in enumerate(model.layers, start=1)} == {
        l: tuple(f"k{k}" for k in ks) for l, ks in expected.items()
    }
    assert sum(len(layer.skips) for layer in model.layers) == total
    assert [b.has_shortcut for b in model.residual_blocks()] == [bool(expected[l]) for l in range(1, 21)]
    weights = {l: sorted({s.scale for s in layer.skips.values()}) for l, layer in enumerate(model.layers, start=1)}
    if name == "resmlp_identity_20":  # one skip per layer: exactly the identity, the input tensor itself
        assert all(weights[l] == [1.0] for l in range(2, 21))
        x = torch.randn(2, 128)
        assert all(layer.skips["k2"](x) is x for layer in model.layers[1:])
    else:  # 1 at layer 2, 1/2 at layer 3, 1/3 from layer 4 on: never 1/3 everywhere
        assert weights[2] == [1.0] and weights[3] == [0.5]
        assert all(weights[l] == [1 / 3] for l in range(4, 21))


def test_multiskip_activations_follow_the_formula_hand_count() -> None:
    """Main path silenced (W = 0, b = 0), no norm, identity activation: a^l = sum_{k <= l} a^{l-k} / m_l, so
    a^l = c_l a^0 with c_0 = 1, c_1 = 0 (layer 1 has no skip), c_2 = 1, c_3 = (0 + 1) / 2, c_4 = (1 + 0 + 1) / 3,
    ... computed here from the formula and compared with the network's activations."""
    model = create_model("resmlp_multiskip_20", norm="identity", act="identity", depth=8)
    with torch.no_grad():
        for layer in model.layers:
            layer.linear.weight.zero_()
            layer.linear.bias.zero_()
        acts = _activations(model, torch.randn(4, 784))
    c = [1.0, 0.0]
    for l in range(2, 9):
        reached = [k for k in (2, 3, 4) if k <= l]
        c.append(sum(c[l - k] for k in reached) / len(reached))
    assert c[:5] == [1.0, 0.0, 1.0, 0.5, 2 / 3]
    for l in range(1, 9):
        torch.testing.assert_close(acts[l], c[l] * acts[0], rtol=1e-6, atol=1e-6)


def test_batchnorm_on_a_residual_mlp_normalises_vectors() -> None:
    # "batchnorm" names BatchNorm2d for image models; on (B, width) vectors it must be the 1-d kind.
    model = create_model("resmlp_identity_20", norm="batchnorm").train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is torch.nn.BatchNorm1d for m in norms)
    x = torch.randn(8, model.in_channels) * 3 + 5
    model.stem(x)  # the stem's norm sees a batch of vectors and normalises each unit over it
    stem_norm = model.stem[1]
    torch.testing.assert_close(stem_norm.running_mean, 0.1 * model.stem[0](x).mean(0), rtol=1e-5, atol=1e-6)
    assert model(x).shape == (8, model.num_classes)
