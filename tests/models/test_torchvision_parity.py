"""Our ImageNet ResNets are torchvision's: same parameter count, same keys, same outputs.

torchvision is an optional dependency; CI installs it (scripts/test.sh), so these tests run there.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import create_model

torchvision = pytest.importorskip("torchvision")

FAST = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d"]
HEAVY = ["resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2", "resnext101_32x8d"]


def _randomize_norms(model: nn.Module) -> None:
    """Non-trivial BN statistics, so that a misplaced BN would show in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.2, 0.6)
            m.bias.data.uniform_(-0.1, 0.1)


def _check(name: str, size: int) -> None:
    reference = getattr(torchvision.models, name)(weights=None)
    _randomize_norms(reference)
    ours = create_model(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert list(ours.state_dict()) == list(reference.state_dict()) or set(ours.state_dict()) == set(
        reference.state_dict()
    )
    ours.load_state_dict(reference.state_dict())  # strict: the keys are the same
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero tensors
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", FAST)
def test_torchvision_weights_load_and_match(name: str) -> None:
    _check(name, 224)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_torchvision_weights_load_and_match_heavy(name: str) -> None:
    _check(name, 160)
