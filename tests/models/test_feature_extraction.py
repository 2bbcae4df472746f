"""Feature extraction on every model: torch.fx tracing, ``forward_intermediates`` and ``features_only``.

Shapes are counted by hand from the papers' layouts; values are compared with the eager model, with torchvision's
``create_feature_extractor`` and with timm's ``resnet50`` ``features_only`` on the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch.fx import symbolic_trace

from resnets import SkipNetwork, create_model, get_model_entry, list_models
from resnets.errors import ConfigError, InputShapeError
from resnets.models.features import FeatureListNet
from resnets.models.profile import build_meta
from tests.helpers import big_twin_marks, randomize_bn


def _test_input(name: str) -> tuple[int, ...]:
    """The registered input size, with images cut to 32 pixels (every stage of an ImageNet net keeps a pixel)."""
    size = get_model_entry(name).input_size
    if get_model_entry(name).input_kind == "image" and max(size[1:]) > 32:
        return (size[0], 32, 32)
    return size


def _params(name: str) -> list:
    """Models over 10M parameters or 60 units run under the slow marker (deeper and wider twins of the default
    ones); the ImageNet ResNets' features are checked by default through resnet50's dedicated tests below."""
    return [pytest.param(name, marks=big_twin_marks(name, params=10e6, units=60))]


@pytest.fixture(scope="module", params=[p for name in list_models() for p in _params(name)])
def named_model(request: pytest.FixtureRequest) -> tuple[str, SkipNetwork]:
    """Each registered model, built once for the tests that share it (pytest groups them by model)."""
    return request.param, create_model(request.param)


def test_symbolic_trace_computes_what_the_model_computes(named_model: tuple[str, SkipNetwork]) -> None:
    """The fx graph's logits equal the eager ones bit for bit.

    Train mode (batch statistics), as in test_shared_interface: an untrained ResNet-1202 overflows in eval mode.
    """
    name, model = named_model
    model.train()
    graph = symbolic_trace(model)
    x = torch.randn(2, *_test_input(name))
    with torch.no_grad():
        expected, got = model(x), graph(x)
    assert got.shape == expected.shape == (2, model.num_classes)
    assert torch.equal(got, expected)


def test_intermediates_follow_feature_info_and_the_stages(named_model: tuple[str, SkipNetwork]) -> None:
    """Every feature point has the channels and reduction ``feature_info`` says; the final features are
    ``forward_features``'s exactly; the feature modules are the stages of residual_blocks()."""
    name, model = named_model
    model.eval()
    size = _test_input(name)
    x = torch.randn(1, *size)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert len(intermediates) == len(model.feature_info)
    for feature, entry in zip(intermediates, model.feature_info):
        if model.input_kind == "image":  # NCHW maps: the side (less an unpadded first conv's border) shrinks
            side = ((size[1] - model.border) // entry["reduction"], (size[2] - model.border) // entry["reduction"])
            assert feature.shape == (1, entry["num_chs"], *side), entry
        elif model.input_kind == "sequence":
            assert feature.shape == (1, size[0], entry["num_chs"])
        else:
            assert feature.shape == (1, entry["num_chs"])

    # Each unit lies inside one feature module, in forward order; in a convolutional model (an image model
    # without a final norm for its blocks) feature i >= 1 is the container of exactly the units of stage i.
    convolutional = model.input_kind == "image" and model.final_norm_name is None
    modules = [entry["module"] for entry in model.feature_info]
    owners = []
    for unit in model.residual_blocks():
        owner = [i for i, m in enumerate(modules) if unit.name == m or unit.name.startswith(m + ".")]
        assert len(owner) == 1, (unit.name, modules)
        owners.append(owner[0])
        if convolutional and owner[0] > 0:
            assert unit.stage == owner[0], (unit.name, modules[owner[0]])
    assert owners == sorted(owners)


def test_resnet20_stage_shapes_by_hand() -> None:
    """He et al.'s CIFAR net: a 16-channel 3x3 stem at 32x32, then 16@32, 32@16, 64@8; no pooling in the stem."""
    model = create_model("resnet20").eval()
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in model.forward_intermediates(torch.randn(2, 3, 32, 32))[1]]
    assert shapes == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert [e["reduction"] for e in model.feature_info] == [1, 1, 2, 4]
    assert [e["module"] for e in model.feature_info] == ["relu", "layer1", "layer2", "layer3"]


def test_densenet_stage_shapes_by_hand() -> None:
    """A dense block of n layers adds n * k channels; a transition halves channels (floor) and the side.

    DenseNet-BC-100-12: stem 2k = 24; 24 + 16 * 12 = 216 @32; 108 + 192 = 300 @16; 150 + 192 = 342 @8.
    DenseNet-121 (k = 32) at 224 px: stem 64 @112 (before its max-pool); 64 + 6 * 32 = 256 @56;
    128 + 12 * 32 = 512 @28; 256 + 24 * 32 = 1024 @14; 512 + 16 * 32 = 1024 @7.
    """
    cifar = create_model("densenet_bc_100_12").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = cifar.forward_intermediates(x)
        normed = cifar.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
    assert [tuple(f.shape[1:]) for f in maps] == [(24, 32, 32), (216, 32, 32), (300, 16, 16), (342, 8, 8)]
    assert torch.equal(normed, final)  # norm=True: the last block through norm5 + ReLU, the final features
    assert not torch.equal(maps[-1], final)  # by default the last block's raw concatenation
    imagenet = build_meta("densenet121")  # shapes only: the meta device computes no values
    meta_maps = imagenet.forward_intermediates(torch.empty(1, 3, 224, 224, device="meta"), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in meta_maps] == [
        (64, 112, 112),
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (1024, 7, 7),
    ]


def test_resnet50_features_only_equals_timm_on_the_same_weights() -> None:
    """timm's resnet50 features_only (act1 before the max-pool, layer1..4) on our weights: the same maps.

    Values at 64 px (fast); the shapes at 224 px on the meta device: 64@112, 256@56, 512@28, 1024@14, 2048@7.
    """
    timm = pytest.importorskip("timm")
    ours = create_model("resnet50", features_only=True)
    assert isinstance(ours, FeatureListNet)
    randomize_bn(ours.model)
    reference = timm.create_model("resnet50", pretrained=False, features_only=True).eval()
    reference.load_state_dict(ours.model.state_dict(), strict=True)  # the same keys: no classifier on either
    assert ours.channels() == reference.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert ours.reduction() == reference.feature_info.reduction() == [2, 4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, expected = ours(x), reference(x)
    assert [tuple(f.shape[1:]) for f in got] == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for a, b in zip(got, expected, strict=True):
        assert b.abs().max() > 1e-3  # maps that carry signal
        torch.testing.assert_close(a, b)
    meta = FeatureListNet(build_meta("resnet50", num_classes=0))
    shapes = [tuple(f.shape[1:]) for f in meta(torch.empty(1, 3, 224, 224, device="meta"))]
    assert shapes == [(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]


def test_create_feature_extractor_traces_our_module_names() -> None:
    """torchvision's fx-based extractor on resnet50 at 64 px: layer2 is 512 channels at 64 / 8 = 8 pixels."""
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    model = create_model("resnet50").eval()
    extractor = feature_extraction.create_feature_extractor(model, {"layer2": "f", "layer1.0.relu": "g"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        expected = model.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
    assert out["f"].shape == (2, 512, 8, 8)
    assert torch.equal(out["f"], expected)
    assert out["g"].shape == (2, 64, 16, 16)  # inside the first bottleneck: planes 64 at stride 4


def test_eager_models_still_refuse_bad_inputs_after_tracing() -> None:
    model = create_model("resnet20")
    symbolic_trace(model)
    with pytest.raises(
        InputShapeError, match=r"expects input of shape \(batch, 3, height, width\), got \(2, 1, 8, 8\)"
    ):
        model(torch.randn(2, 1, 8, 8))


def test_indices_stop_early_and_formats() -> None:
    """timm's rules: n is the last n, negatives count from the end, stop_early ends the pass at the last index."""
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    calls = []
    model.layer3.register_forward_hook(lambda *_: calls.append("layer3"))
    with torch.no_grad():
        everything = model.forward_intermediates(x, intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        chosen = model.forward_intermediates(x, indices=[-1, 1, 1], intermediates_only=True)
        calls.clear()
        final, early = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
    assert all(torch.equal(a, b) for a, b in zip(last_two, everything[2:], strict=True))
    assert len(chosen) == 2 and torch.equal(chosen[0], everything[1]) and torch.equal(chosen[1], everything[3])
    assert calls == [] and torch.equal(final, everything[2]) and torch.equal(early[1], everything[2])
    for bad in (5, [4], [-5], 0):
        with pytest.raises(ConfigError, match="out of range|asks for the last"):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ConfigError, match=r"gives intermediates as NCHW, not 'NLC'"):
        model.forward_intermediates(x, output_fmt="NLC")


def test_vit_intermediates_as_maps_or_tokens_and_normed() -> None:
    """NCHW puts patch token i * 8 + j at pixel (i, j) of an 8x8 map; NLC drops only the class token; norm=True
    applies the final LayerNorm to every block's output, as timm's ViT."""
    model = create_model("vit_tiny_patch4_32").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        blocks = []
        hook = model.blocks[3].register_forward_hook(lambda m, i, out: blocks.append(out))
        maps = model.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        hook.remove()
        tokens = model.forward_intermediates(x, indices=[3], output_fmt="NLC", intermediates_only=True)[0]
        normed = model.forward_intermediates(x, norm=True, output_fmt="NLC", intermediates_only=True)
        final = model.forward_features(x)
    assert maps.shape == (2, 128, 8, 8) and tokens.shape == (2, 64, 128)
    assert torch.equal(tokens, blocks[0][:, 1:])
    assert torch.equal(maps[:, :, 2, 5], tokens[:, 2 * 8 + 5])
    assert torch.equal(normed[-1], final[:, 1:])  # the last block, normed, is the final features' patch tokens
    assert torch.equal(normed[3], model.norm(blocks[0])[:, 1:])


def test_resmlp_intermediates_are_the_layer_activations() -> None:
    """Feature i is a^{i+1}; norm=True passes each through the final norm, whose running statistics (a
    BatchNorm here) move once per forward pass, not once per intermediate."""
    model = create_model("resmlp_identity_20", depth=4, norm="batchnorm1d").train()
    x = torch.randn(8, 784)
    acts = []
    hooks = [layer.register_forward_hook(lambda m, i, out: acts.append(out)) for layer in model.layers]
    with torch.no_grad():
        final, raw = model.forward_intermediates(x)
        for h in hooks:
            h.remove()
        before = model.final_norm.running_mean.clone()
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(raw, acts, strict=True))
    assert model.final_norm.num_batches_tracked.item() == 2  # two passes, not 2 + 4
    momentum = model.final_norm.momentum
    expected_mean = (1 - momentum) * before + momentum * raw[-1].mean(0)
    torch.testing.assert_close(model.final_norm.running_mean, expected_mean)
    assert torch.equal(normed[-1], final)
    assert not torch.equal(normed[0], raw[0])


def test_features_only_options() -> None:
    features = create_model("resnet20", features_only=True, out_indices=(1, -1))
    assert features.out_indices == (1, 3) and features.channels() == [16, 64] and features.reduction() == [1, 4]
    assert [e["module"] for e in features.feature_info] == ["layer1", "layer3"]
    assert "fc.weight" not in features.model.state_dict()  # no classifier, as timm's features_only nets
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = features.eval()(x)
        everything = features.model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape) for f in maps] == [(1, 16, 32, 32), (1, 64, 8, 8)]
    assert torch.equal(maps[0], everything[1]) and torch.equal(maps[1], everything[3])
    with pytest.raises(ConfigError, match="num_classes=10 does not apply with features_only"):
        create_model("resnet20", features_only=True, num_classes=10)
    with pytest.raises(ConfigError, match=r"out_indices=\(1,\) applies only with features_only"):
        create_model("resnet20", out_indices=(1,))
    with pytest.raises(ConfigError, match="feature index 4 is out of range: this model has 4 feature points"):
        create_model("resnet20", features_only=True, out_indices=(4,))


def test_features_only_loads_torchvision_and_timm_state_dicts_under_their_own_keys() -> None:
    """A features model's keys are the model's (timm's feature nets too), so a plain state dict loads, and what did
    not load is named as the state dict names it: only the classifier, which a features model does not have."""
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    from resnets.io.weight_files import load_weights

    state = torchvision.models.resnet50(weights=None).state_dict()
    features = create_model("resnet50", features_only=True)
    assert list(features.state_dict()) == list(timm.create_model("resnet50", features_only=True).state_dict())
    result = features.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["fc.weight", "fc.bias"]
    loaded = features.state_dict()
    assert len(loaded) == len(state) - 2 and all(torch.equal(loaded[k], state[k]) for k in loaded)
    report = load_weights(create_model("resnet50", features_only=True), state)  # the one loader: trunk only
    assert report.ok and report.loaded == [k for k in state if not k.startswith("fc.")] and report.fresh == []
    old = {f"model.{k}": v for k, v in loaded.items()}  # as features_only models saved them before
    assert not create_model("resnet50", features_only=True).load_state_dict(old).missing_keys
    parent = torch.nn.Sequential(create_model("resnet50", features_only=True))  # nested under a prefix
    assert next(iter(parent.state_dict())) == "0.conv1.weight"
    result = parent.load_state_dict({f"0.{k}": v for k, v in state.items()}, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["0.fc.weight", "0.fc.bias"]
    assert torch.equal(parent[0].model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
