"""Multiply-adds are computed, and agree with the published figures."""

from __future__ import annotations

import pytest

from resnets.errors import InputShapeError
from resnets.models.profile import build_meta, count_macs, count_parameters, summarize


def conv_macs(k: int, cin: int, cout: int, size: int) -> int:
    """k*k*cin*cout multiply-adds at each of size*size output positions."""
    return k * k * cin * cout * size * size


def resnet20_by_hand() -> tuple[int, int]:
    """Parameters and MACs of CIFAR ResNet-20 (option A: parameter-free shortcuts), conv by conv."""
    convs = [(3, 3, 16, 32)]  # stem
    for cin, cout, size in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):  # three stages of three basic blocks
        convs += [(3, cin, cout, size), (3, cout, cout, size)] + [(3, cout, cout, size)] * 4
    conv_params = sum(k * k * cin * cout for k, cin, cout, _ in convs)
    bn_params = 2 * sum(cout for _, _, cout, _ in convs)
    fc_params = 64 * 10 + 10
    return conv_params + bn_params + fc_params, sum(conv_macs(*c) for c in convs) + 64 * 10


def test_resnet20_parameters_and_macs_equal_a_count_by_hand() -> None:
    params, macs = resnet20_by_hand()
    assert (params, macs) == (269_722, 40_551_040)
    model = build_meta("resnet20")
    assert count_parameters(model) == params and count_macs(model, (3, 32, 32)) == macs


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [("resnet20", (3, 32, 32), 40.8e6), ("resnet56", (3, 32, 32), 125.8e6), ("resnet50", (3, 224, 224), 4.09e9)],
)
def test_macs_match_published_figures(name: str, size: tuple[int, ...], expected: float) -> None:
    # The published CIFAR figures also count a few element-wise ops; convolutions and the classifier
    # are all but 0.6% of them.
    assert count_macs(build_meta(name), size) == pytest.approx(expected, rel=0.008)


def test_summary_rows_add_up() -> None:
    model = build_meta("resnet20")
    rows = summarize(model, (3, 32, 32))
    assert [r.name for r in rows] == [
        "stem + transitions",
        "stage 1 (3 units)",
        "stage 2 (3 units)",
        "stage 3 (3 units)",
        "head",
    ]
    assert [r.output_shape for r in rows] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    assert sum(r.params for r in rows) == 269_722
    assert sum(r.macs for r in rows) == count_macs(model, (3, 32, 32))
    # Each stage costs the same: half the resolution, twice the channels.
    assert rows[2].macs == pytest.approx(rows[3].macs, rel=0.05)
    assert [r.input_shape for r in rows] == [(3, 32, 32), (16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_densenet_stages_show_the_whole_concatenation() -> None:
    # DenseNet-BC-100-12: a stem of 2k = 24 channels; each block adds 16 layers x 12 = 192 channels and each
    # transition halves them (compression 0.5) and the resolution.
    rows = summarize(build_meta("densenet_bc_100_12"), (3, 32, 32))
    stages = rows[1:-1]
    assert [r.input_shape for r in stages] == [(24, 32, 32), (108, 16, 16), (150, 8, 8)]
    assert [r.output_shape for r in stages] == [(216, 32, 32), (300, 16, 16), (342, 8, 8)]
    assert rows[0].output_shape == (24, 32, 32) and rows[-1].input_shape == (342, 8, 8)


def test_bottleneck_stages_output_four_times_their_planes() -> None:
    rows = summarize(build_meta("preact_resnet164"), (3, 32, 32))
    assert [r.output_shape for r in rows[1:-1]] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]


def test_summary_of_a_misfitting_input_names_the_expected_shape() -> None:
    with pytest.raises(
        InputShapeError, match=r"expects input of shape \(batch, 3, height, width\), got \(1, 1, 28, 28\)"
    ):
        summarize(build_meta("resnet20"), (1, 28, 28))
    with pytest.raises(InputShapeError, match="at least 29x29 pixels"):
        summarize(build_meta("densenet121"), (3, 28, 28))
