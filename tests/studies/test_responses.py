"""The responses instrument against values known by hand: branch stds of tiny nets, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.studies import responses


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, layers=(1, 1, 1), num_classes=3, in_channels=1).eval()


def _constant_branches(model: torch.nn.Module, levels: list[float]) -> None:
    """bn2 scale 0 and bias +b on half the channels, -b on the other half: F(x) is +-b, so its std is exactly b."""
    for block, b in zip(model.residual_blocks(), levels):
        bn = block.module.bn2
        signs = torch.ones(bn.num_features)
        signs[: bn.num_features // 2] = -1
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.copy_(b * signs)


def test_constant_branches_give_the_std_and_ratio_known_by_hand() -> None:
    residual, plain = _tiny("resnet20"), _tiny("plain20")
    _constant_branches(residual, [0.5, 1.0, 1.5])
    _constant_branches(plain, [2.0, 3.0, 4.0])
    batches = [(torch.randn(5, 1, 8, 8), None), (torch.randn(3, 1, 8, 8), None)]
    measured = responses.response_stds(residual, batches)
    assert [m["name"] for m in measured] == ["layer1.0", "layer2.0", "layer3.0"]
    assert [m["std"] for m in measured] == pytest.approx([0.5, 1.0, 1.5], rel=1e-6)
    assert [m["channel_std"] for m in measured] == pytest.approx([0.0] * 3, abs=1e-6)  # each channel is constant
    nets = {
        "res": responses.describe(residual, [measured]),
        "plain": responses.describe(plain, [responses.response_stds(plain, batches)]),
    }
    assert (nets["res"]["kind"], nets["plain"]["kind"], nets["res"]["units"]) == ("residual", "plain", 3)
    assert nets["res"]["mean_std"]["mean"] == pytest.approx(1.0)
    assert nets["plain"]["mean_std"]["mean"] == pytest.approx(3.0)
    assert nets["plain"]["sorted_std"] == pytest.approx([4.0, 3.0, 2.0])
    compared = responses.compare(nets)
    assert compared["pairs"][0]["ratio"] == pytest.approx(1 / 3)
    assert compared["depth"] == []
    torch.manual_seed(0)
    deeper = create_model("resnet20", layers=(2, 2, 2), num_classes=3, in_channels=1).eval()
    _constant_branches(deeper, [0.25] * 6)
    nets["deep"] = responses.describe(deeper, [responses.response_stds(deeper, batches)])
    compared = responses.compare(nets)
    assert [(d["shallower"], d["deeper"]) for d in compared["depth"]] == [("res", "deep")]
    assert compared["depth"][0]["ratio"] == pytest.approx(0.25)  # mean std 0.25 against 1.0
    nets["plain"]["family"] = "another"  # nets of different families are not twins
    assert [p["residual"] for p in responses.compare(nets)["pairs"]] == []


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_std_matches_a_direct_computation_of_bn2_conv2(name: str) -> None:
    model = _tiny(name)
    for module in model.modules():  # running statistics away from 0/1, so eval-mode BN does something
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.2, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    block = model.residual_blocks()[1].module  # layer2.0: strided, 16 -> 32 channels
    inputs: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    torch.manual_seed(1)
    batches = [(torch.randn(4, 1, 8, 8), None), (torch.randn(6, 1, 8, 8), None)]
    measured = responses.response_stds(model, batches)
    handle.remove()
    with torch.no_grad():
        x = torch.cat(inputs)
        branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))  # (10, 32, 4, 4), by hand
    assert measured[1]["std"] == pytest.approx(branch.std(correction=0).item(), rel=1e-4)
    per_channel = branch.transpose(0, 1).reshape(branch.shape[1], -1).std(1, correction=0).mean().item()
    assert measured[1]["channel_std"] == pytest.approx(per_channel, rel=1e-4)


def test_depths_without_a_registered_pair_are_refused() -> None:
    assert responses._models(responses.Options(depths=(56,))) == ["resnet56", "plain56"]
    assert responses._models(responses.Options()) == []  # the default runs: DEFAULT_RUNS["responses"]
    with pytest.raises(ConfigError, match="no registered resnet26/plain26 pair"):
        responses._models(responses.Options(depths=(26,)))


def test_cli_writes_json_markdown_and_figure(batch_bars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    titles: list[tuple[str, str]] = []
    monkeypatch.setattr(responses, "titled", lambda figure, what, training: titles.append((what, training)))
    argv = ["study", "responses", "--data", str(batch_bars), "--seeds", "2", "--samples", "12", "--steps", "1"]
    argv += ["--model", "resnet20", "--model", "plain20"]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    # the figure's title says what it shows and how long the nets were trained
    assert titles == [
        (
            "Std of each residual branch's response, dashed: plain nets (He et al. 2015, Fig. 7)",
            f"resnet20, plain20: trained 1 step (1 epoch) on {batch_bars}",
        )
    ]
    saved = json.loads((tmp_path / "responses.json").read_text())
    assert set(saved) >= {"claim", "verdict", "supported", "settings", "numbers", "table", "figures"}
    nets = saved["numbers"]["nets"]
    assert list(nets) == ["resnet20", "plain20"]
    assert [nets[n]["kind"] for n in nets] == ["residual", "plain"]
    for net in nets.values():
        assert len(net["layers"]) == 9 and net["mean_std"]["n"] == 2
        assert all(math.isfinite(layer["std"]["mean"]) and layer["std"]["mean"] > 0 for layer in net["layers"])
    pair = saved["numbers"]["pairs"][0]
    assert pair["ratio"] == pytest.approx(nets["resnet20"]["mean_std"]["mean"] / nets["plain20"]["mean_std"]["mean"])
    by_seed = [r / p for r, p in zip(nets["resnet20"]["mean_std_by_seed"], nets["plain20"]["mean_std_by_seed"])]
    assert pair["by_seed"] == pytest.approx(by_seed) and len(by_seed) == 2
    (check,) = saved["checks"]  # one pair, no second depth: one check, whose interval spans the two seeds
    assert check["interval"] == pytest.approx([min(by_seed), max(by_seed)])
    expected = "supported" if max(by_seed) < 1 else "not supported" if min(by_seed) >= 1 else "undecided"
    assert check["status"] == saved["status"] == expected
    assert saved["thresholds"]["residual_over_plain"]["source"].startswith("He, Zhang, Ren & Sun 2015")
    assert [net["over_training"]["steps"] for net in nets.values()] == [[0, 1], [0, 1]]  # snapshots; 1 is the last
    assert saved["settings"]["bn"].startswith("eval-mode") and "trained runs" in saved["settings"]["measured_on"]
    text = (tmp_path / "responses.md").read_text()
    assert responses.CLAIM in text and saved["verdict"] in text
    assert (tmp_path / "responses-std.png").read_bytes()[:4] == b"\x89PNG"
