"""Hessian spectra against matrices and functions whose Hessians and eigenvalues are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from resnets.studies import spectrum


def _known_spectrum(values: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(values) Q^T with Q a seeded random orthogonal matrix: a symmetric matrix with the given spectrum."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=generator, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q.T


def test_hvp_of_a_cubic_equals_the_hand_hessian() -> None:
    # f(a, b) = a^2 b + b^3 with a a vector: H = [[2b I, 2a], [2a^T, 6b]]
    a = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    loss = lambda: (a * a).sum() * b + b**3
    by_hand = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -4.0], [2.0, -4.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(spectrum.hvp(loss, [a, b], v), by_hand @ v, atol=1e-14)
    assert torch.allclose(spectrum.exact_hessian(loss, [a, b]), by_hand, atol=1e-14)
    assert torch.allclose(spectrum.exact_hessian(loss, [a, b], chunk=2), by_hand, atol=1e-14)


def test_unused_and_linear_parameters_have_zero_rows() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    linear = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    unused = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    loss = lambda: 0.5 * (x * x).sum() * 3.0 + 2.0 * linear  # H = diag(3, 3, 0, 0)
    hessian = spectrum.exact_hessian(loss, [x, linear, unused])
    assert torch.equal(hessian, torch.diag(torch.tensor([3.0, 3.0, 0.0, 0.0], dtype=torch.float64)))


def test_lanczos_finds_the_extremes_of_a_known_spectrum() -> None:
    values = [-3.0, -1.0, 0.0, 0.25, *torch.linspace(0.5, 2.0, 36).tolist(), 7.0, 9.0]
    matrix = _known_spectrum(values)
    result = spectrum.lanczos(lambda v: matrix @ v, len(values), 30, torch.Generator().manual_seed(1))
    assert result.steps == 30 and not result.exhausted
    assert result.values[-1].item() == pytest.approx(9.0, abs=1e-6)
    assert result.values[-2].item() == pytest.approx(7.0, abs=1e-6)
    assert result.values[0].item() == pytest.approx(-3.0, abs=1e-6)
    assert result.residuals[-1].item() < 1e-6  # the bound says the top Ritz pair converged


def test_lanczos_with_dim_steps_gives_the_whole_spectrum_and_ritz_vectors() -> None:
    generator = torch.Generator().manual_seed(3)
    values = sorted(torch.randn(25, generator=generator, dtype=torch.float64).mul(4).tolist())
    matrix = _known_spectrum(values, seed=2)
    result = spectrum.lanczos(lambda v: matrix @ v, 25, 25, torch.Generator().manual_seed(0), vectors=True)
    assert torch.allclose(result.values, torch.linalg.eigvalsh(matrix), atol=1e-10)
    assert torch.allclose(result.values, torch.tensor(values, dtype=torch.float64), atol=1e-10)
    u = result.vectors
    assert torch.allclose(matrix @ u, u * result.values, atol=1e-9)  # H u = theta u
    assert torch.allclose(u.T @ u, torch.eye(25, dtype=torch.float64), atol=1e-10)


def test_lanczos_stops_where_the_krylov_space_closes() -> None:
    # three distinct eigenvalues, each 5 times: the Krylov space of any start vector has dimension 3
    matrix = _known_spectrum([-2.0] * 5 + [1.0] * 5 + [4.0] * 5)
    result = spectrum.lanczos(lambda v: matrix @ v, 15, 15, torch.Generator().manual_seed(0))
    assert result.exhausted and result.steps == 3
    assert result.values.tolist() == pytest.approx([-2.0, 1.0, 4.0], abs=1e-10)
    zero = spectrum.lanczos(lambda v: 0 * v, 6, 6, torch.Generator().manual_seed(0))
    assert zero.exhausted and zero.values.tolist() == [0.0]


def test_top_eigenvalue_separates_largest_algebraic_from_largest_magnitude() -> None:
    matrix = _known_spectrum([-5.0, *torch.linspace(-1.0, 1.0, 20).tolist(), 3.0])
    top = spectrum.top_eigenvalue(lambda v: matrix @ v, 22, 22, torch.Generator().manual_seed(0))
    assert (top.algebraic, top.smallest, top.magnitude) == pytest.approx((3.0, -5.0, 5.0), abs=1e-9)
    power = spectrum.power_iteration(lambda v: matrix @ v, 22, 200, torch.Generator().manual_seed(0))
    assert power == pytest.approx(-5.0, abs=1e-6)  # power iteration finds the largest |λ|, with its sign


def test_a_seed_fixes_the_result() -> None:
    matrix = _known_spectrum(torch.linspace(-1.0, 2.0, 30).tolist())
    runs = [spectrum.lanczos(lambda v: matrix @ v, 30, 8, torch.Generator().manual_seed(5)) for _ in range(2)]
    other = spectrum.lanczos(lambda v: matrix @ v, 30, 8, torch.Generator().manual_seed(6))
    assert torch.equal(runs[0].values, runs[1].values)
    assert not torch.equal(runs[0].values, other.values)


def test_summary_defines_the_condition_number_over_eigenvalues_above_the_tolerance() -> None:
    values = torch.tensor([-4.0, -1e-14, 0.0, 0.5, 2.0], dtype=torch.float64)
    summary = spectrum.summarise(values, rtol=1e-10, atol=1e-12)
    assert summary["max_abs"] == 4.0 and summary["min_abs"] == 0.5
    assert summary["condition"] == 8.0  # 4 / 0.5: -1e-14 and 0 are below 1e-10 * 4
    assert (summary["near_zero"], summary["negative"], summary["vanishing"]) == (2, 1, False)
    flat = spectrum.summarise(torch.zeros(6, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert flat["condition"] is None and flat["near_zero"] == 6 and flat["vanishing"]
    tiny = spectrum.summarise(torch.tensor([1e-20, -3e-20]), rtol=1e-10, atol=1e-12)
    assert tiny["vanishing"] and tiny["condition"] == pytest.approx(3.0)  # scale-free, but flat
    assert math.isclose(tiny["smallest"], -3e-20, rel_tol=1e-6)
