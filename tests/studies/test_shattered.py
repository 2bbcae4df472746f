"""The shattered instrument: its autocorrelation against hand values and the closed forms of white and brown
noise, the input gradients against finite differences, and a looks-linear net (affine) at exactly 1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.models import create_at_depth
from resnets.studies.shattered import (
    autocorrelation,
    brown_autocorrelation,
    calibrate_bn,
    centred_autocorrelation,
    he_init_linear,
    image_line,
    input_gradients,
    line_points,
)
from tests.helpers import randomize_bn


def test_autocorrelation_by_hand() -> None:
    g = torch.tensor([1.0, 2.0, 3.0])
    assert autocorrelation(g, [1, 2]) == pytest.approx([8 / math.sqrt(5 * 13), 3 / math.sqrt(1 * 9)])
    # vectors: inner products of rows; <(1,0),(0,1)> = 0 and <(0,1),(0,2)> = 2
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert autocorrelation(rows, [1]) == pytest.approx([2 / math.sqrt((1 + 1) * (1 + 4))])
    assert autocorrelation(torch.full((7,), -3.0), [1, 3, 6]) == pytest.approx([1.0, 1.0, 1.0])
    assert math.isnan(centred_autocorrelation(torch.full((7, 2), 0.5)))
    # centred: (1, 2, 3) - 2 = (-1, 0, 1): lag 1 gives 0 / sqrt(1 * 1), lag 2 gives -1 / 1
    assert centred_autocorrelation(g, 1) == pytest.approx(0.0)
    assert centred_autocorrelation(g, 2) == pytest.approx(-1.0)


def test_brown_closed_form_matches_its_sums() -> None:
    n, h = 10, 3  # sum_{i<=7} i = 28; sum_{4<=i<=10} i = 49
    assert brown_autocorrelation(n, h) == pytest.approx(28 / math.sqrt(28 * 49))


@pytest.mark.parametrize("lag", [1, 4, 16, 64])
def test_noise_references_against_closed_forms(lag: int) -> None:
    # 4000 independent sequences as the coordinates of one vector sequence: the ratio pools their sums, so it
    # converges to the ratio of expectations: 0 for white noise, sqrt((N-h+1)/(N+h+1)) for a random walk
    n, width = 256, 4000
    white = torch.randn(n, width, generator=torch.Generator().manual_seed(lag), dtype=torch.float64)
    (w,) = autocorrelation(white, [lag])
    assert abs(w) < 4 / math.sqrt(n * width)
    (b,) = autocorrelation(white.cumsum(0), [lag])
    assert b == pytest.approx(brown_autocorrelation(n, lag), abs=0.01 if lag > 16 else 0.002)
    assert brown_autocorrelation(n, 1) == pytest.approx(math.sqrt(256 / 258))


def test_white_noise_autocorrelation_is_zero_with_spread_one_over_root_n() -> None:
    n = 256
    values = torch.tensor(
        [autocorrelation(torch.randn(n, generator=torch.Generator().manual_seed(s)), [1])[0] for s in range(400)]
    )
    assert abs(float(values.mean())) < 3 / math.sqrt(n * 400)
    assert float(values.std()) == pytest.approx(1 / math.sqrt(n), rel=0.15)


def test_input_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    model = he_init_linear(
        create_at_depth("resmlp_plain_20", 3, in_channels=1, num_classes=1, width=16, norm="identity")
    )
    model = model.double().eval()
    x = line_points(64).double()
    eps = 1e-6
    with torch.no_grad():
        numeric = (model(x + eps) - model(x - eps)) / (2 * eps)
    torch.testing.assert_close(input_gradients(model, x), numeric, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="eval mode"):
        input_gradients(model.train(), x)


def test_calibrate_bn_sets_the_points_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4))
    x = torch.randn(32, 1)
    calibrate_bn(model, x)
    hidden = model[0](x).detach()
    assert not model.training
    torch.testing.assert_close(model[1].running_mean, hidden.mean(0))
    torch.testing.assert_close(model[1].running_var, hidden.var(0))  # unbiased, as BN keeps it
    with torch.no_grad():
        assert model(x).mean(0).abs().max() < 1e-5  # normalised by the points' own statistics


@pytest.mark.parametrize("bn", ["fresh", "random", "calibrated"])
def test_looks_linear_net_is_affine_so_its_gradient_autocorrelation_is_one(bn: str) -> None:
    torch.manual_seed(0)
    model = resnets.create_model("plain_ll_cifar20", in_channels=1, num_classes=3).double()
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    x = image_line(images, (0.3,), (0.25,), 32).double()
    model = {"fresh": model.eval, "random": lambda: randomize_bn(model), "calibrated": lambda: calibrate_bn(model, x)}[
        bn
    ]()
    g = input_gradients(model, x)
    assert g.abs().max() > 0
    assert autocorrelation(g, [1, 2, 8, 31]) == pytest.approx([1.0] * 4, abs=1e-5)
    # the same architecture without the mirrored init is not affine
    torch.manual_seed(0)
    crelu = calibrate_bn(create_at_depth("plain_crelu_cifar56", 20, in_channels=1, num_classes=3).double(), x)
    assert autocorrelation(input_gradients(crelu, x), [1])[0] < 1 - 1e-4


def test_cli_end_to_end(bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    argv = ["study", "shattered", "--data", str(bars), "--seeds", "2", "--samples", "8", "--depths", "2,8"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "shattered.json").read_text())
    assert set(payload) >= {"name", "claim", "verdict", "supported", "settings", "numbers", "table", "figures"}
    numbers = payload["numbers"]
    assert set(numbers["mlp"]) == {"plain", "plain+BN", "resnet", "resnet+BN", "highway"}
    assert set(numbers["mlp"]["plain"]) == {"2", "8"} and set(numbers["conv"]["plain+BN"]) == {"8"}
    for table in (numbers["mlp"], numbers["conv"]):
        for by_depth in table.values():
            for entry in by_depth.values():
                assert -1 <= entry["lag1"]["mean"] <= 1 and entry["lag1"]["n"] == 2
    assert numbers["conv"]["looks-linear"]["8"]["lag1"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert payload["settings"]["bn"].startswith("running statistics set from the measured points")
    text = (out / "shattered.md").read_text()
    assert "Balduzzi" in text and "Verdict" in text
    assert len(list(out.glob("shattered-*.png"))) == 3
