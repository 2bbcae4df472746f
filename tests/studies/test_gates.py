"""The gates instrument against closed forms (constant gates: T = sigmoid(b)) and a hand computation, the refusal
of nets without gates, and the CLI end to end on a 2-step highway run (on the tiny data each step is an epoch
with its evaluation and checkpoint, so steps are what costs time)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError, ResnetsError
from resnets.studies import gates


def _sigmoid(b: float) -> float:
    return 1 / (1 + math.exp(-b))


def _set_gate(gate: torch.nn.Module, bias: float | torch.Tensor) -> None:
    """Zero gate weights: T(x) = sigmoid(bias) for every input."""
    with torch.no_grad():
        gate.affine.weight.zero_()
        gate.affine.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand_as(gate.affine.bias))


def test_constant_conv_gates_give_sigmoid_of_the_bias() -> None:
    torch.manual_seed(0)
    model = create_model("highway_cifar19", layers=(2, 1, 1), widths=(4, 6, 8), num_classes=3, in_channels=1).eval()
    layers = [info.module for info in model.residual_blocks()]
    biases = [-2.0, 1.5, -0.5]
    for layer, b in zip(layers[:3], biases):
        _set_gate(layer.transform_gate, b)
    _set_gate(layers[3].transform_gate, torch.tensor([-1.0] * 6 + [1.0] * 2))  # 6 of 8 channels carry
    batches = [(torch.randn(5, 1, 8, 8), None), (torch.randn(2, 1, 8, 8), None)]
    stats = gates.gate_stats(model, batches)
    assert [s["name"] for s in stats] == ["stages.0.0", "stages.0.1", "stages.1.0", "stages.2.0"]
    assert [s["gate"] for s in stats] == [
        f"{n}.transform_gate" for n in ("stages.0.0", "stages.0.1", "stages.1.0", "stages.2.0")
    ]
    assert [s["stage"] for s in stats] == [1, 1, 2, 3]
    expected_t = [_sigmoid(b) for b in biases] + [(6 * _sigmoid(-1.0) + 2 * _sigmoid(1.0)) / 8]
    assert [s["mean_t"] for s in stats] == pytest.approx(expected_t, rel=1e-6)
    assert [s["carry_fraction"] for s in stats] == [1.0, 0.0, 1.0, 0.75]  # T < 0.5 exactly where b < 0
    assert [s["sample_std"] for s in stats] == pytest.approx([0.0] * 4, abs=1e-7)  # no gate depends on x


def test_fully_connected_gates_match_a_hand_computation() -> None:
    torch.manual_seed(0)
    model = create_model("highway_fc_10", depth=4, width=6, num_classes=3, in_channels=5).eval()
    x = torch.randn(40, 5)
    stats = gates.gate_stats(model, [(x[:25], None), (x[25:], None)])
    assert [s["name"] for s in stats] == ["layers.0", "layers.1"]
    with torch.no_grad():
        t = torch.sigmoid(model.layers[0].transform_gate.affine(model.stem(x)))  # (40, 6): the first layer's T
    assert stats[0]["mean_t"] == pytest.approx(t.mean().item(), rel=1e-5)
    assert stats[0]["carry_fraction"] == pytest.approx((t.mean(0) < 0.5).float().mean().item())
    assert stats[0]["sample_std"] == pytest.approx(t.mean(1).std(correction=0).item(), rel=1e-4)


def test_a_net_without_transform_gates_is_refused_in_one_line() -> None:
    model = create_model("resnet20", layers=(1, 1, 1), num_classes=3, in_channels=1)
    with pytest.raises(ConfigError, match="no transform gates.*needs a Highway net") as error:
        gates.gate_modules(model, "run 'somewhere' (resnet20)")
    assert isinstance(error.value, ResnetsError) and "\n" not in str(error.value)


def test_cli_measures_every_snapshot_of_a_2_step_highway_run(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "gates", "--data", str(batch_bars), "--seeds", "2", "--samples", "12", "--steps", "2"]
    argv += ["--model", "highway_cifar19"]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "gates.json").read_text())
    assert set(saved) >= {"claim", "verdict", "supported", "settings", "numbers", "table", "figures"}
    result = saved["numbers"]["runs"]["highway_cifar19"]
    assert [p["checkpoint"] for p in result["checkpoints"]] == ["step-0", "step-1", "step-2"]  # 3 distinct of 4
    start = result["checkpoints"][0]
    assert len(start["layers"]) == 15 and start["mean_t"]["n"] == 2
    # At initialisation every gate has bias -2 and small weights: T close to sigmoid(-2) = 0.119, all carry.
    assert start["mean_t"]["mean"] == pytest.approx(_sigmoid(-2.0), abs=0.03)
    assert start["carry_fraction"]["mean"] == 1.0 and start["closed_per_input"]["mean"] == 1.0
    for point in result["checkpoints"]:
        assert all(0 < layer["mean_t"]["mean"] < 1 for layer in point["layers"])
    assert len(result["change"]["mean_t"]) == 15 and math.isfinite(result["change"]["mean_abs_change_t"])
    text = (tmp_path / "gates.md").read_text()
    assert gates.CLAIM in text and saved["verdict"] in text
    assert saved["figures"] == ["gates-mean-t.png", "gates-closed.png", "gates-carry.png"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in saved["figures"])
