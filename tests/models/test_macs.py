"""Multiply-adds are computed, and agree with the published figures."""

from __future__ import annotations

import pytest

from resnets.models.profile import build_meta, count_macs, summarize


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
