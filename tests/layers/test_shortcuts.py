"""Shortcut options A, B, C, D and plain mode: parameter counts change exactly as the arithmetic says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.errors import ConfigError
from resnets.layers.shortcuts import ZeroPadShortcut, make_shortcut
from resnets.models.profile import count_parameters


def _bn_proj(cin: int, cout: int) -> int:
    """Parameters of a 1x1 conv (no bias) plus BN (scale and shift)."""
    return cin * cout + 2 * cout


RESNET20 = 269_722  # option A: the shortcuts add nothing
# Option B projects only at the two stage transitions (16->32, 32->64).
RESNET20_B = RESNET20 + _bn_proj(16, 32) + _bn_proj(32, 64)
# Option C projects in all 9 blocks: 3x(16->16); 16->32, 2x(32->32); 32->64, 2x(64->64).
RESNET20_C = (
    RESNET20 + 3 * _bn_proj(16, 16) + _bn_proj(16, 32) + 2 * _bn_proj(32, 32) + _bn_proj(32, 64) + 2 * _bn_proj(64, 64)
)


@pytest.mark.parametrize(
    ("shortcut", "expected"),
    [("A", RESNET20), ("B", RESNET20_B), ("C", RESNET20_C), ("D", RESNET20_B), ("none", RESNET20)],
)
def test_cifar_shortcut_parameter_counts(shortcut: str, expected: int) -> None:
    assert count_parameters(create_model("resnet20", shortcut=shortcut)) == expected


def test_plain18_drops_exactly_the_three_projections() -> None:
    projections = _bn_proj(64, 128) + _bn_proj(128, 256) + _bn_proj(256, 512)
    assert count_parameters(create_model("resnet18")) - count_parameters(create_model("plain18")) == projections
    assert all(
        not b.module.has_shortcut and b.module.downsample is None for b in create_model("plain18").residual_blocks()
    )


def test_option_a_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert sum(p.numel() for p in ZeroPadShortcut(16, 32, 2).parameters()) == 0


def test_option_d_averages_before_projecting() -> None:
    shortcut = make_shortcut("D", 8, 16, stride=2, norm=nn.BatchNorm2d)
    assert isinstance(shortcut[0], nn.AvgPool2d)
    conv = shortcut[1]
    assert conv.stride == (1, 1)
    x = torch.randn(1, 8, 4, 4)
    shortcut.eval()
    expected = shortcut[2](conv(nn.functional.avg_pool2d(x, 2)))
    assert torch.allclose(shortcut(x), expected)
    # Where the resolution is kept, D is the plain projection (nothing to pool).
    assert not any(isinstance(m, nn.AvgPool2d) for m in make_shortcut("D", 8, 16, 1, nn.BatchNorm2d))


def test_identity_where_shape_is_kept_except_option_c() -> None:
    for option in ("A", "B", "D"):
        assert make_shortcut(option, 16, 16, 1, nn.BatchNorm2d) is None
    assert isinstance(make_shortcut("C", 16, 16, 1, nn.BatchNorm2d), nn.Sequential)
    assert make_shortcut("none", 16, 32, 2, nn.BatchNorm2d) is None


def test_resnet50d_uses_deep_stem_and_avgpool_shortcuts() -> None:
    model = create_model("resnet50d")
    assert isinstance(model.conv1, nn.Sequential) and len(model.conv1) == 7
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)


def test_bad_shortcut_option_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="shortcut must be one of"):
        create_model("resnet20", shortcut="E")
