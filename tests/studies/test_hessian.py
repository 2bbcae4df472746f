"""The hessian instrument against closed forms: condition numbers of linear nets at zero, finite differences, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.studies import hessian
from resnets.studies.spectrum import exact_hessian, flatten, hvp_operator, top_eigenvalue, unflatten

PHI = (1 + math.sqrt(5)) / 2


def _zeros(depth: int, width: int) -> list[torch.Tensor]:
    return hessian.linear_weights(depth, width, 0.0, 0)


def test_end_to_end_maps_by_hand() -> None:
    w1, w2 = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    eye = torch.eye(2)
    assert torch.equal(hessian.end_to_end([w1, w2], 0), w2 @ w1)
    assert torch.equal(hessian.end_to_end([w1, w2], 1), (eye + w2) @ (eye + w1))
    assert torch.equal(hessian.end_to_end([w1, w2], 2), eye + w2 @ w1)
    assert torch.equal(hessian.end_to_end([w1, w2, w1, w2], 2), (eye + w2 @ w1) @ (eye + w2 @ w1))


def test_one_two_layer_unit_at_zero_has_the_hand_condition_number() -> None:
    # A - I = [[2, 1], [0, 1]]: (A - I)(A - I)^T has eigenvalues 3 +- sqrt(5) = 2 phi^2, 2 / phi^2, so the
    # singular values are sqrt(2) phi and sqrt(2) / phi and their ratio is phi^2 = (3 + sqrt(5)) / 2.
    target = torch.tensor([[3.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    measured = hessian.linear_spectrum(2, _zeros(2, 2), target)
    assert measured["condition"] == pytest.approx((3 + math.sqrt(5)) / 2, abs=1e-8)
    assert measured["gradient_norm"] == 0.0  # the zero point is stationary
    weights = _zeros(2, 2)
    values = torch.linalg.eigvalsh(exact_hessian(lambda: hessian.population_loss(weights, 2, target), weights))
    s1, s2 = math.sqrt(2) * PHI, math.sqrt(2) / PHI  # eigenvalues +-sigma_i, each d = 2 times
    assert values.tolist() == pytest.approx([-s1, -s1, -s2, -s2, s2, s2, s1, s1], abs=1e-10)
    diagonal = torch.diag(torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64))  # A - I = diag(2, 1, 0.5)
    assert hessian.linear_spectrum(2, _zeros(2, 3), diagonal)["condition"] == pytest.approx(4.0, abs=1e-8)


def test_two_layer_condition_numbers_are_equal_across_depths() -> None:
    target = hessian.target_map()
    s = torch.linalg.svdvals(target - torch.eye(4, dtype=torch.float64))
    assert s.tolist() == pytest.approx([2.0, 1.5, 1.0, 0.5], abs=1e-12)  # as documented: condition number 4
    for depth in (2, 4, 8, 12):
        measured = hessian.linear_spectrum(2, _zeros(depth, 4), target)
        assert measured["condition"] == pytest.approx(4.0, abs=1e-8)
        assert (measured["max_abs"], measured["min_abs"]) == pytest.approx((2.0, 0.5), abs=1e-10)
        assert measured["negative"] == measured["params"] // 2  # +-sigma_i, each d times per unit
    assert hessian.zero_point_condition(target) == pytest.approx(4.0, abs=1e-12)


@pytest.mark.parametrize("shortcut", [0, 1, 2, 3])
def test_exact_hessian_equals_finite_differences_of_the_loss(shortcut: int) -> None:
    target = torch.tensor([[1.5, -0.4], [0.3, 0.2]], dtype=torch.float64)
    weights = hessian.linear_weights(3 if shortcut == 3 else 2, 2, 0.6, seed=4)
    exact = exact_hessian(lambda: hessian.population_loss(weights, shortcut, target), weights)
    theta = flatten([w.detach() for w in weights])

    def loss(point: torch.Tensor) -> float:
        return float(hessian.population_loss(unflatten(point, weights), shortcut, target))

    h, dim = 1e-4, len(theta)
    unit = torch.eye(dim, dtype=torch.float64) * h
    numeric = torch.tensor(
        [
            [
                (
                    loss(theta + unit[i] + unit[j])
                    - loss(theta + unit[i] - unit[j])
                    - loss(theta - unit[i] + unit[j])
                    + loss(theta - unit[i] - unit[j])
                )
                / (4 * h * h)
                for j in range(dim)
            ]
            for i in range(dim)
        ],
        dtype=torch.float64,
    )
    assert exact.abs().max() > 0.1  # a Hessian worth comparing
    assert torch.allclose(exact, numeric, atol=1e-6)


def test_three_layer_shortcuts_and_deep_plain_nets_are_flat_at_zero() -> None:
    target = hessian.target_map()
    for shortcut, depth in ((3, 3), (3, 9), (0, 3), (0, 5)):
        weights = _zeros(depth, 4)
        loss = lambda weights=weights, shortcut=shortcut: hessian.population_loss(weights, shortcut, target)
        assert torch.equal(exact_hessian(loss, weights), torch.zeros(16 * depth, 16 * depth, dtype=torch.float64))
        assert torch.equal(flatten(torch.autograd.grad(loss(), weights)), torch.zeros(16 * depth, dtype=torch.float64))
        measured = hessian.linear_spectrum(shortcut, weights, target)
        assert measured["vanishing"] and measured["condition"] is None and measured["near_zero"] == 16 * depth
    near = hessian.linear_spectrum(3, hessian.linear_weights(3, 4, 0.01, 0), target)
    assert 0 < near["max_abs"] < 1  # near zero the Hessian is of the order of the weights: nearly flat


def test_lanczos_matches_the_exact_spectrum_on_a_mid_size_net() -> None:
    target = hessian.target_map(3, seed=1)
    weights = hessian.linear_weights(8, 3, 0.05, seed=2)  # 72 parameters
    loss = lambda: hessian.population_loss(weights, 1, target)
    values = torch.linalg.eigvalsh(exact_hessian(loss, weights))
    top = top_eigenvalue(hvp_operator(loss, weights), 72, 30, torch.Generator().manual_seed(0))
    assert top.algebraic == pytest.approx(values.max().item(), rel=1e-8)
    assert top.magnitude == pytest.approx(values.abs().max().item(), rel=1e-8)
    exact = hessian.linear_spectrum(1, weights, target)
    by_lanczos = hessian.linear_spectrum(1, weights, target, exact_limit=0)  # forces Lanczos, 72 steps
    assert by_lanczos["method"] == "lanczos" and exact["method"] == "exact"
    assert by_lanczos["condition"] == pytest.approx(exact["condition"], rel=1e-6)
    assert by_lanczos["max_abs"] == pytest.approx(exact["max_abs"], rel=1e-10)


def test_hvp_through_a_real_net_equals_finite_differences_of_its_gradient() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", layers=(1, 1, 1), num_classes=3, in_channels=1).double().eval()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    params = list(model.parameters())
    loss = lambda: torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    product = hvp_operator(loss, params)(v)
    base, h = [p.detach().clone() for p in params], 1e-6  # larger steps cross ReLU kinks

    def gradient(shift: float) -> torch.Tensor:
        with torch.no_grad():
            for p, b, d in zip(params, base, unflatten(v, params)):
                p.copy_(b + shift * d)
        return flatten(torch.autograd.grad(loss(), params))

    numeric = (gradient(h) - gradient(-h)) / (2 * h)
    assert torch.allclose(product, numeric, rtol=1e-6, atol=1e-8)


def test_growth_is_deepest_over_shallowest() -> None:
    assert hessian.growth([{"condition": 2.0}, {"condition": 3.0}, {"condition": 8.0}]) == 4.0
    assert hessian.growth([{"condition": {"mean": 5.0}}, {"condition": {"mean": 50.0}}]) == 10.0
    assert hessian.growth([{"condition": None}, {"condition": 3.0}]) is None
    assert hessian.growth([{"condition": 3.0}]) is None


def test_cli_writes_json_markdown_and_figures(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "hessian", "--data", str(batch_bars), "--steps", "2", "--depths", "2,3,4,6", "--seeds", "1"]
    argv += ["--model", "resnet20", "--model", "plain20"]
    assert main([*argv, "--samples", "16", "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "hessian.json").read_text())
    linear = saved["numbers"]["linear"]
    assert [p["depth"] for p in linear["2-layer"]["zero"]] == [2, 4, 6]
    assert [p["depth"] for p in linear["3-layer"]["zero"]] == [3, 6]
    assert all(p["condition"] == pytest.approx(4.0, abs=1e-8) for p in linear["2-layer"]["zero"])
    assert all(p["max_abs"] == 0.0 and p["condition"] is None for p in linear["3-layer"]["zero"])
    for label in ("none", "1-layer", "2-layer", "3-layer"):
        for point in linear[label]["near_zero"]:
            assert math.isfinite(point["condition"]["mean"]) and point["max_abs"]["mean"] > 0
    assert saved["numbers"]["agreement"]["agree"]
    nets = saved["numbers"]["trained"]["nets"]
    assert list(nets) == ["resnet20", "plain20"] and [n["kind"] for n in nets.values()] == ["residual", "plain"]
    for net in nets.values():
        assert all(math.isfinite(m["top"]) and m["samples"] == 16 for m in net["per_seed"])
        assert net["per_seed"][0]["label_smoothing"] == pytest.approx(0.1)  # the study-fm recipe's
    ratio = saved["numbers"]["trained"]["pairs"][0]["ratio"]
    assert ratio == pytest.approx(nets["plain20"]["top"]["mean"] / nets["resnet20"]["top"]["mean"])
    assert hessian.CLAIM in (tmp_path / "hessian.md").read_text()
    for name in ("hessian-condition.png", "hessian-trained.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
