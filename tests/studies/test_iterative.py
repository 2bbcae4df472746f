"""The iterative-estimation instrument against hand computations on tiny linear nets, and end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.cli import main
from resnets.device import Precision
from resnets.layers.skip_unit import SkipUnit, UnitShape
from resnets.models.base import SkipNetwork
from resnets.studies.iterative import (
    across_stage_order,
    perturbed_errors,
    unit_statistics,
    within_stage_order,
)

FP32 = Precision(device=torch.device("cpu"), amp=False, dtype=torch.float32, channels_last=False)


class Linear(SkipUnit):
    """y = x + x W^T: a residual unit whose F is a fixed 2x2 matrix."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__(UnitShape(2, 2))
        self.weight = nn.Parameter(torch.tensor(weight))

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x @ self.weight.T, x


class Chain(SkipNetwork):
    """Vectors of 2 features through the given units (one stage), then a fixed classifier: logits = y."""

    input_kind = "vector"

    def __init__(self, *units: SkipUnit) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.num_features = 2, 2, 2
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(2, 2, bias=False)
        nn.init.eye_(self.fc.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [(f"units.{i}", 1, unit) for i, unit in enumerate(self.units)]


def _cos(a: list[float], b: list[float]) -> float:
    return (a[0] * b[0] + a[1] * b[1]) / math.hypot(*a) / math.hypot(*b)


def test_one_unit_cosine_and_update_ratio_by_hand() -> None:
    # F(x) = (x2, 0): x = (3, 4) -> F = (4, 0), y = (7, 4); x = (1, -1) -> F = (-1, 0), y = (0, -1)
    model = Chain(Linear([[0.0, 1.0], [0.0, 0.0]])).eval()
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    (stats,) = unit_statistics(model, model.residual_blocks(), [(x, torch.zeros(2, dtype=torch.long))], FP32)
    cos = (_cos([3, 4], [7, 4]) + _cos([1, -1], [0, -1])) / 2  # (37 / (5 sqrt 65) + 1 / sqrt 2) / 2
    ratio = (4 / 5 + 1 / math.sqrt(2)) / 2
    assert stats["cos_io"] == pytest.approx(cos, rel=1e-6)
    assert stats["ratio"] == pytest.approx(ratio, rel=1e-6)
    assert stats["cos_prev"] is None  # a stage's first unit has no predecessor


def test_two_units_consecutive_cosine_by_hand() -> None:
    # unit 1: F = (x2, 0); unit 2: F = (0, x1). x = (1, 1): y1 = (2, 1), y2 = (2, 3)
    model = Chain(Linear([[0.0, 1.0], [0.0, 0.0]]), Linear([[0.0, 0.0], [1.0, 0.0]])).eval()
    x = torch.tensor([[1.0, 1.0]])
    first, second = unit_statistics(model, model.residual_blocks(), [(x, torch.zeros(1, dtype=torch.long))], FP32)
    assert second["cos_prev"] == pytest.approx(_cos([2, 1], [2, 3]), rel=1e-6)
    assert second["cos_io"] == pytest.approx(_cos([2, 1], [2, 3]), rel=1e-6)  # y1 is unit 2's input
    assert second["ratio"] == pytest.approx(2 / math.sqrt(5), rel=1e-6)  # ||(0, 2)|| / ||(2, 1)||
    assert first["ratio"] == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def test_shuffle_and_matched_drop_errors_by_hand() -> None:
    """Two units: the only within-stage shuffle is the swap, and its matched drop deletes both."""
    model = Chain(Linear([[0.0, 1.0], [0.0, 0.0]]), Linear([[0.0, 0.0], [1.0, 0.0]])).eval()
    # x = (1, 1.5): in order y = (2.5, 1.5) -> 2.5, 4 (class 1); swapped: (1, 2.5) -> (3.5, 2.5) (class 0);
    # both deleted: (1, 1.5) (class 1). Label 0: errors 1 (order), 0 (swapped), 1 (dropped).
    x, y = torch.tensor([[1.0, 1.5]]), torch.tensor([0])
    errors = perturbed_errors(model, model.residual_blocks(), [(x, y)], FP32, random.Random(0), draws=3)
    assert errors == {"within": [(1, 0.0)] * 3, "across": [], "drop": [(1, 1.0)] * 3}


def test_zero_branches_give_cosine_one_and_no_update() -> None:
    """resnet20 with zero last-BN scales: F(x) = 0 and y = relu(x) = x (its inputs are ReLU outputs)."""
    model = create_model("resnet20", num_classes=3, in_channels=1, zero_init_last=True).eval()
    x = torch.randn(6, 1, 8, 8)
    stats = unit_statistics(model, model.residual_blocks(), [(x, torch.zeros(6, dtype=torch.long))], FP32)
    for info, s in zip(model.residual_blocks(), stats):
        assert s["ratio"] == 0.0
        if info.changes_shape:
            assert s["cos_io"] is None
        else:
            assert s["cos_io"] == pytest.approx(1.0, abs=1e-6)
        if info.name.endswith(".0"):
            assert s["cos_prev"] is None
        else:
            assert s["cos_prev"] == pytest.approx(1.0, abs=1e-6)


def test_shuffle_orders_respect_stages_and_shapes() -> None:
    blocks = create_model("resnet20", num_classes=3, in_channels=1).residual_blocks()
    rng = random.Random(0)
    for _ in range(20):
        order = within_stage_order(blocks, rng, 1)
        assert order[3:] == [3, 4, 5, 6, 7, 8] and order[:3] != [0, 1, 2] and sorted(order[:3]) == [0, 1, 2]
    assert within_stage_order(blocks, rng, 2) == [0, 1, 2, 3, 5, 4, 6, 7, 8]  # layer2.0 downsamples: one swap left
    assert within_stage_order(blocks, rng, 3) == [0, 1, 2, 3, 4, 5, 6, 8, 7]
    assert across_stage_order(blocks, rng) is None  # stages have 16, 32 and 64 channels: nothing fits elsewhere
    same = create_model("resnet20", num_classes=3, in_channels=1, widths=(16, 16, 16)).residual_blocks()
    for _ in range(20):  # every stage 16 channels wide: the 7 stride-1 units can go anywhere among themselves
        order = across_stage_order(same, rng)
        assert order[3] == 3 and order[6] == 6 and sorted(order) == list(range(9))
        assert any(same[j].stage != same[i].stage for i, j in enumerate(order))


def test_cli_writes_json_markdown_and_figures(bars: Path, batch_bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["study", "iterative", "--data", str(batch_bars), "--seeds", "1", "--samples", "12", "--steps", "4"]
    assert main([*argv, "--model", "resnet20", "--model", "plain20", "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "iterative.json").read_text())
    assert {"claim", "verdict", "supported", "settings", "numbers", "table", "figures"} <= set(payload)
    models = payload["numbers"]["models"]
    assert set(models) == {"resnet20", "plain20"}
    for m in models.values():
        for key in ("cos_prev", "cos_io", "ratio"):
            assert math.isfinite(m[key]["mean"])
        assert m["shuffles"]["across"] is None
        assert m["shuffles"]["within"]["increase"]["n"] == 3  # one draw per stage and seed
        assert set(m["shuffles"]["within"]["by_stage"]) == {"1", "2", "3"}
    assert models["resnet20"]["residual"] and models["plain20"]["plain"]
    text = (out / "iterative.md").read_text()
    assert "Greff" in text and payload["verdict"] in text
    assert payload["figures"] and all((out / name).is_file() for name in payload["figures"])
