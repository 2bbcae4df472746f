"""The landscape instrument against values known by hand: filter norms, a linear classifier's loss in closed
form, discrete curvatures of polynomial surfaces, the run's own loss at the centre, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.cli import main
from resnets.metrics import evaluate
from resnets.runs import Run, open_run
from resnets.studies import Context, landscape
from resnets.studies.directions import displaced, filter_normalize, random_direction
from resnets.studies.plans import RunSpec
from resnets.studies.trained import train_run


@pytest.fixture(scope="module")
def tiny_run(batch_bars: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """resnet20 trained 2 steps on the 258 training images of the bars."""
    out = tmp_path_factory.mktemp("landscape-runs")
    context = Context(data=str(batch_bars), out=str(out), quiet=True)
    return open_run(train_run(context, RunSpec("resnet20", "resnet20", 2, snapshots=0)))


def test_filter_normalize_by_hand() -> None:
    direction = torch.tensor([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0]])
    weight = torch.tensor([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    expected = torch.tensor([[0.6, 0.8], [math.sqrt(8), 0.0], [0.0, 0.0]])  # rows scaled to 1, sqrt(8), 0
    assert torch.allclose(filter_normalize(direction, weight), expected, atol=1e-7)
    assert torch.equal(filter_normalize(torch.ones(3), torch.ones(3)), torch.zeros(3))  # a bias: no move


@pytest.mark.parametrize("which", ["resnet", "layernorm"])
def test_direction_has_the_weights_filter_norms_and_is_zero_on_norms_and_biases(which: str) -> None:
    torch.manual_seed(0)
    if which == "resnet":
        model = create_model("resnet20", layers=(1, 1, 1), num_classes=3, in_channels=1)
    else:
        model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    direction = random_direction(model, torch.Generator().manual_seed(3))
    moved = still = 0
    for name, parameter in model.named_parameters():
        d = direction[name]
        assert d.shape == parameter.shape
        if parameter.dim() >= 2:
            moved += 1
            ours = d.double().reshape(d.shape[0], -1).norm(dim=1)
            theirs = parameter.detach().double().reshape(d.shape[0], -1).norm(dim=1)
            assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
            assert not torch.allclose(d, parameter.detach())  # a random direction, not θ itself
        else:
            still += 1
            assert torch.count_nonzero(d) == 0, name
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))]
    biases = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    assert still == 2 * len(norms) + len(biases) and moved > 0


def test_linear_classifier_curve_and_plane_match_the_closed_form() -> None:
    """logits z = (W + αD1 + βD2) x: sample (1, 0) of class 0 has z = (3α, 1 + β); sample (0, 1) of class 1 has
    z = (0, 0). Mean cross-entropy: (log(1 + e^(1 + β - 3α)) + log 2) / 2; the first is right iff 3α >= 1 + β
    and the second never, as a tie goes to class 0."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    d1 = {"weight": torch.tensor([[3.0, 0.0], [0.0, 0.0]])}
    d2 = {"weight": torch.tensor([[0.0, 0.0], [1.0, 0.0]])}
    batches = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))]
    line, grid = landscape.coordinates(5), landscape.coordinates(3)
    measured = landscape.surfaces(model, batches, 2, (d1, d2), line, grid)

    def loss(a: float, b: float) -> float:
        return (math.log1p(math.exp(1 + b - 3 * a)) + math.log(2)) / 2

    assert measured["line"]["loss"] == pytest.approx([loss(a, 0) for a in line], rel=1e-6)
    assert measured["line"]["error"] == [100.0, 100.0, 100.0, 50.0, 50.0]
    expected = [loss(a, b) for b in grid for a in grid]  # rows β, columns α
    assert [v for row in measured["plane"]["loss"] for v in row] == pytest.approx(expected, rel=1e-6)
    assert measured["plane"]["error"] == [[100.0, 50.0, 50.0], [100.0, 100.0, 50.0], [100.0, 100.0, 50.0]]
    assert measured["evaluations"] == 5 + 9 - 3  # the plane's β = 0 row lies on the line
    assert torch.equal(model.weight, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_curvatures_of_polynomial_surfaces() -> None:
    grid = landscape.coordinates(5)  # interior points: α, β in {-0.5, 0, 0.5}

    def surface(f) -> list[list[float]]:
        return [[f(a, b) for a in grid] for b in grid]

    bowl = landscape.convexity(surface(lambda a, b: a * a + 2 * b * b + a * b), grid, 1.0)  # λ = 3 ± √2
    assert bowl == {"convex_fraction": 1.0, "negative_curvature_ratio": 0.0, "points": 9}
    low, high = landscape.principal_curvatures(surface(lambda a, b: a * a + 2 * b * b + a * b), 0.5)
    assert low == pytest.approx(np.full((3, 3), 3 - math.sqrt(2))) and high == pytest.approx(
        np.full((3, 3), 3 + math.sqrt(2))
    )
    saddle = landscape.convexity(surface(lambda a, b: a * a - 0.25 * b * b), grid, 1.0)  # λ = -0.5, 2
    assert saddle["convex_fraction"] == 0.0 and saddle["negative_curvature_ratio"] == pytest.approx(0.25)
    # α³ + β²: λ = 6α and 2, so PSD where α >= 0; ratio 1 at α = -0.5 (λmin -3 against 2), else 0
    cubic = surface(lambda a, b: a**3 + b * b)
    near, whole = landscape.convexity(cubic, grid, 0.5), landscape.convexity(cubic, grid, 1.0)
    assert (near["points"], near["convex_fraction"], near["negative_curvature_ratio"]) == (5, 0.8, pytest.approx(0.2))
    assert (whole["points"], whole["convex_fraction"]) == (9, pytest.approx(6 / 9))
    assert whole["negative_curvature_ratio"] == pytest.approx(1 / 3)


def test_sharpness_and_roughness_by_hand() -> None:
    line = landscape.coordinates(5)
    bowl, bumpy = [4.0, 1.0, 0.5, 1.5, 4.0], [4.0, 5.0, 0.5, 1.5, 4.0]
    assert landscape.sharpness(bowl, line, 0.5) == pytest.approx(0.75)  # (1 + 1.5) / 2 - 0.5
    assert landscape.sharpness(bowl, line, 1.0) == pytest.approx(3.5)
    assert landscape.roughness(bowl, line) == pytest.approx(1.0)
    assert landscape.roughness(bumpy, line) == pytest.approx((1 + 4.5 + 1 + 2.5) / 7.0)


def test_centre_is_the_runs_own_loss_and_seeds_are_reproducible(tiny_run: Run) -> None:
    model = tiny_run.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = landscape.training_subset(tiny_run, 1000)  # more than the 258 images: all of them, in order
    raw = tiny_run.data().train.inputs.float() / 255  # (258, 1, 8, 8): the subset is these, unaugmented
    mean, std = tiny_run.record.data.mean[0], tiny_run.record.data.std[0]
    assert torch.allclose(torch.cat([x for x, _ in batches]), (raw - mean) / std, atol=1e-5)
    line, grid = landscape.coordinates(5), landscape.coordinates(3)

    def measure(seed: int) -> dict:
        along = landscape.directions(model, seed)
        return landscape.surfaces(model, batches, 3, along, line, grid, precision=tiny_run.precision)

    first, again, other = measure(0), measure(0), measure(1)
    own = tiny_run.evaluate("train")
    assert first["line"]["loss"][2] == evaluate(model, batches, 3, precision=tiny_run.precision).loss
    assert first["line"]["loss"][2] == pytest.approx(own.loss, rel=1e-6)  # the run's path folds its BatchNorms
    assert first["line"]["error"][2] == own.top1_error
    assert first == again
    assert other["line"]["loss"][2] == first["line"]["loss"][2] and other["plane"]["loss"] != first["plane"]["loss"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers, bit for bit


def test_displacement_writes_the_sum_and_restores_theta() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    d1, d2 = {"weight": torch.tensor([[1.0, 1.0]])}, {"weight": torch.tensor([[0.0, 4.0]])}
    with displaced(model, (d1, d2)) as move:
        move((0.5, -0.25))
        assert torch.equal(model.weight, torch.tensor([[1.5, -2.5]])) and model.bias.item() == 0.5
    assert torch.equal(model.weight, torch.tensor([[1.0, -2.0]]))


def test_cli_writes_surfaces_json_and_figures(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "landscape", "--data", str(batch_bars), "--steps", "2", "--grid", "3", "--samples", "16"]
    argv += ["--model", "resnet20", "--model", "plain20"]
    assert main([*argv, "--seeds", "2", "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "landscape.json").read_text())
    numbers = saved["numbers"]
    assert numbers["grid"] == [-1.0, 0.0, 1.0] and len(numbers["line"]) == landscape.LINE_POINTS
    assert list(numbers["nets"]) == ["resnet20", "plain20"] and numbers["pairs"] == [["resnet20", "plain20"]]
    for net in numbers["nets"].values():
        centre = net["centre"]["loss"]
        assert math.isfinite(centre) and centre > 0
        assert [s["line"]["loss"][20] for s in net["seeds"]] == [centre, centre]  # α = 0 is θ for every seed
        assert [s["plane"]["loss"][1][1] for s in net["seeds"]] == [centre, centre]
        assert net["evaluations"] == (41 + 9 - 3) + (41 + 9 - 3 - 1)  # seed 1 reuses the centre
        assert net["measures"]["convex_fraction@1"]["n"] == 2
    assert saved["supported"] in (True, False, None) and saved["settings"]["samples"] == 16
    for name in ("landscape-1d", "landscape-contour", "landscape-surface"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["verdict"] in (tmp_path / "landscape.md").read_text()
    steps = [net["over_training"]["steps"] for net in numbers["nets"].values()]
    assert steps == [[0, 1, 2], [0, 1, 2]]  # a 5 x 5 surface at every kept snapshot
    assert saved["checks"][0]["name"] == "more_convex" and len(saved["checks"][0]["values"]) == 2
    assert main(["study", "landscape", "--grid", "2", "--quiet", "--out", str(tmp_path)]) == 2
