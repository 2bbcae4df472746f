"""Tests generated from the registry: every model builds, runs forward and backward, and has the
parameter count the papers and torchvision give, where one is given."""

from __future__ import annotations

import math

import pytest
import torch

from resnets import create_model, get_model_entry, list_models
from resnets.models.profile import build_meta, count_parameters
from tests.helpers import big_twin_marks

#: Parameter counts at the model's default number of classes (torchvision, He et al. 2015/2016, WRN, DenseNet).
EXPECTED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "se_resnet50": 28_088_024,  # timm's seresnet50
    "resnet50d": 25_576_264,  # timm's resnet50d
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "preact_resnet164": 1_703_258,
    "preact_resnet1001": 10_327_706,
    "wrn_28_10": 36_479_194,
    "densenet_bc_100_12": 769_162,
    "densenet121": 7_978_856,
}
#: Counts given as "about": (expected, relative tolerance).
APPROX_PARAMS = {"resnext29_8x64d": (34.4e6, 0.005)}

HEAVY_MACS = 2e9  # models above this many multiply-adds at their default size run under the slow marker


def _test_input(name: str) -> tuple[int, ...]:
    """The registered input size, with images larger than 64 pixels cut to 64 to keep the test fast."""
    size = get_model_entry(name).input_size
    if get_model_entry(name).input_kind == "image" and max(size[1:]) > 64:
        return (size[0], 64, 64)
    return size


def _params(name: str) -> list:
    return [pytest.param(name, marks=big_twin_marks(name, params=30e6, units=150))]


ALL_MODELS = [p for name in list_models() for p in _params(name)]


def test_registry_is_not_empty_and_has_the_papers_models() -> None:
    names = set(list_models())
    assert set(EXPECTED_PARAMS) - {"densenet_bc_100_12", "densenet121"} <= names
    assert list_models("resnet2*") == ["resnet20"]
    assert list_models("resnet110") == ["resnet110", "preact_resnet110"]  # no wildcard: a substring match


@pytest.mark.parametrize("name", [n for n in list_models() if n in EXPECTED_PARAMS or n in APPROX_PARAMS])
def test_parameter_count(name: str) -> None:
    count = count_parameters(build_meta(name))
    if name in EXPECTED_PARAMS:
        assert count == EXPECTED_PARAMS[name]
    else:
        expected, rel = APPROX_PARAMS[name]
        assert math.isclose(count, expected, rel_tol=rel)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str) -> None:
    model = create_model(name, num_classes=7)
    size = _test_input(name)
    x = torch.randn(2, *size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shared_interface(name: str) -> None:
    """forward == forward_head(forward_features); reset_classifier; residual units listed in order.

    Train mode (batch statistics): in eval mode an untrained ResNet-1202 overflows, since its BN running
    statistics are still 0/1 and 600 residual additions double the variance each time.
    """
    model = create_model(name).train()
    x = torch.randn(2, *_test_input(name))
    with torch.no_grad():
        torch.manual_seed(1)
        features = model.forward_features(x)
        torch.manual_seed(1)
        assert torch.equal(model(x), model.forward_head(features))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    blocks = model.residual_blocks()
    assert blocks, "every model lists its skip-connection units"
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert [b.stage for b in blocks] == sorted(b.stage for b in blocks)
    modules = dict(model.named_modules())
    assert all(modules[b.name] is b.module for b in blocks)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    assert model.num_classes == 3
    model.reset_classifier(0)  # features only, as in timm
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", [n for n in list_models() if get_model_entry(n).input_kind == "image"])
def test_any_channel_count(name: str) -> None:
    size = _test_input(name)
    model = create_model(name, in_channels=1, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size[1:])).shape == (1, 4)
