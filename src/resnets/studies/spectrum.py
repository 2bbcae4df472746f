"""Hessian spectra of a scalar loss over a list of parameters, through Hessian-vector products.

The Hessian of a network's loss is never formed for a real net: a Hessian-vector product (HVP) costs about two
backward passes by double backward (Pearlmutter 1994, "Fast Exact Multiplication by the Hessian"), and Lanczos
iteration on HVPs finds the extremal eigenvalues in a few dozen products. Tiny nets get the dense matrix, one
HVP per unit vector, so the two can be checked against each other.

Vectors are flat: the parameters' elements concatenated in the order of ``params``. Lanczos runs in float64
with full reorthogonalisation (every new vector is orthogonalised twice against the whole basis), so its Ritz
values do not repeat as plain Lanczos's do in floating point, and a run of ``dim`` steps gives the whole
spectrum. Starting vectors come from a ``torch.Generator``, so a seed fixes every result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

LossFn = Callable[[], torch.Tensor]  # recomputes the scalar loss from the current parameters
MatVec = Callable[[torch.Tensor], torch.Tensor]  # flat vector -> flat vector


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector of ``tensors``' elements, in order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``vector`` cut into pieces shaped (and typed) like ``like``."""
    pieces, start = [], 0
    for t in like:
        pieces.append(vector[start : start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} elements but the parameters have {start}")
    return pieces


def _gradient(loss_fn: LossFn, params: list[torch.Tensor]) -> tuple[tuple, list[int]]:
    """The gradient with its graph, and the indices of its pieces that depend on the parameters."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    return grads, [i for i, g in enumerate(grads) if g is not None and g.requires_grad]


def _differentiate(
    grads: tuple, live: list[int], params: list[torch.Tensor], pieces: list[torch.Tensor], batched: bool
) -> list[torch.Tensor]:
    """d(g . v)/dθ for the vector(s) ``pieces`` (a leading batch dimension where ``batched``); zeros where
    a parameter's gradient does not depend on the parameters."""
    products: Sequence[torch.Tensor | None] = [None] * len(params)
    if live:
        products = torch.autograd.grad(
            [grads[i] for i in live],
            params,
            grad_outputs=[pieces[i] for i in live],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
    return [torch.zeros_like(piece) if h is None else h for piece, h in zip(pieces, products)]


def hvp_operator(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> MatVec:
    """v -> H v for the loss at the parameters' current values, as float64 flat vectors.

    The gradient is built once with its graph (``create_graph``) and each product differentiates g . v
    through it again, so a product costs one backward pass, not a forward and two backwards.
    """
    params = list(params)
    grads, live = _gradient(loss_fn, params)

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        pieces = unflatten(vector.to(params[0].device), params)
        return flatten(_differentiate(grads, live, params, pieces, batched=False)).to(torch.float64)

    return matvec


def hvp(loss_fn: LossFn, params: Sequence[torch.Tensor], vector: torch.Tensor) -> torch.Tensor:
    """The Hessian of ``loss_fn()`` over ``params`` times the flat ``vector`` (double backward), in float64."""
    return hvp_operator(loss_fn, params)(vector)


def exact_hessian(loss_fn: LossFn, params: Sequence[torch.Tensor], chunk: int = 256) -> torch.Tensor:
    """The dense Hessian (float64, dim x dim): HVPs with the unit vectors, ``chunk`` rows per batched
    backward (vmap; one at a time where an operation has no batching rule). For tiny nets and for checks."""
    params = list(params)
    grads, live = _gradient(loss_fn, params)
    dim = sum(p.numel() for p in params)
    device = params[0].device
    rows = []
    for start in range(0, dim, chunk):
        unit = torch.eye(dim, dtype=torch.float64, device=device)[start : start + chunk]  # (c, dim)
        pieces, offset = [], 0
        for p in params:
            pieces.append(unit[:, offset : offset + p.numel()].reshape(len(unit), *p.shape).to(p.dtype))
            offset += p.numel()
        try:
            blocks = _differentiate(grads, live, params, pieces, batched=True)
            rows.append(torch.cat([b.reshape(len(unit), -1) for b in blocks], 1).to(torch.float64))
        except RuntimeError:  # no batching rule: one unit vector at a time
            rows += [
                flatten(_differentiate(grads, live, params, [piece[i] for piece in pieces], batched=False))
                .to(torch.float64)
                .unsqueeze(0)
                for i in range(len(unit))
            ]
    return torch.cat(rows) if rows else torch.zeros(0, 0, dtype=torch.float64)


@dataclass(frozen=True)
class LanczosResult:
    """Ritz values (ascending) of a Lanczos run, their residual bounds, and the Ritz vectors if asked for."""

    values: torch.Tensor  # (k,) float64, ascending
    residuals: torch.Tensor  # (k,) |beta_k * last component of each Ritz vector|: ||H u - theta u|| bounds
    vectors: torch.Tensor | None  # (dim, k) orthonormal Ritz vectors, or None
    steps: int  # Lanczos steps taken (the Krylov dimension)
    exhausted: bool  # the Krylov space closed (beta ~ 0): its Ritz values are eigenvalues, exactly


def lanczos(
    matvec: MatVec,
    dim: int,
    steps: int,
    generator: torch.Generator,
    *,
    vectors: bool = False,
    device: torch.device | str = "cpu",
) -> LanczosResult:
    """``steps`` Lanczos steps (at most ``dim``) from a seeded random start, with full reorthogonalisation.

    Stops early where the Krylov space becomes invariant (beta below 1e-12 of the largest coefficient seen):
    the Ritz values are then eigenvalues (those the start vector reaches, without their multiplicities).
    """
    steps = max(1, min(steps, dim))
    q = torch.randn(dim, generator=generator, dtype=torch.float64).to(device)
    q = q / q.norm()
    basis = torch.zeros(dim, steps, dtype=torch.float64, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    scale, exhausted = 0.0, False
    for k in range(steps):
        basis[:, k] = q
        w = matvec(q).to(q.device, torch.float64)
        alpha = float(w @ q)
        alphas.append(alpha)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough", Parlett)
            w = w - basis[:, : k + 1] @ (basis[:, : k + 1].T @ w)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if beta <= 1e-12 * scale or scale == 0.0:
            exhausted = True
            break
        if k + 1 < steps:
            betas.append(beta)
            q = w / beta
    taken = len(alphas)
    last_beta = 0.0 if exhausted else beta
    tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if taken > 1:
        off = torch.tensor(betas[: taken - 1], dtype=torch.float64)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
    values, small = torch.linalg.eigh(tri)
    residuals = (last_beta * small[-1, :]).abs()
    ritz = basis[:, :taken] @ small.to(device) if vectors else None
    return LanczosResult(values=values, residuals=residuals, vectors=ritz, steps=taken, exhausted=exhausted)


@dataclass(frozen=True)
class TopEigen:
    """The extremal eigenvalues one Lanczos run finds."""

    algebraic: float  # the largest eigenvalue
    smallest: float  # the smallest (most negative) eigenvalue
    magnitude: float  # the largest |eigenvalue| (the spectral norm of the Hessian)
    residual: float  # Lanczos residual bound ||H u - theta u|| of the largest Ritz value
    magnitude_residual: float  # the same for the Ritz value of largest magnitude
    steps: int


def top_eigenvalue(matvec: MatVec, dim: int, steps: int, generator: torch.Generator) -> TopEigen:
    """Largest algebraic and largest-magnitude eigenvalues by Lanczos (both extremes converge first)."""
    result = lanczos(matvec, dim, steps, generator)
    biggest = int(result.values.abs().argmax())
    return TopEigen(
        algebraic=float(result.values[-1]),
        smallest=float(result.values[0]),
        magnitude=abs(float(result.values[biggest])),
        residual=float(result.residuals[-1]),
        magnitude_residual=float(result.residuals[biggest]),
        steps=result.steps,
    )


def power_iteration(matvec: MatVec, dim: int, steps: int, generator: torch.Generator) -> float:
    """The eigenvalue of largest magnitude (signed) by ``steps`` power iterations: a check on Lanczos."""
    v = torch.randn(dim, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    value = 0.0
    for _ in range(steps):
        w = matvec(v).to(v.device, torch.float64)
        value = float(w @ v)
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0
        v = w / norm
    return value


def summarise(eigenvalues: torch.Tensor, *, rtol: float, atol: float) -> dict[str, float | int | bool | None]:
    """Condition number and flatness of a (possibly indefinite) Hessian spectrum.

    ``condition`` = max|λ| / min|λ| over the eigenvalues with |λ| > rtol * max|λ| (the rest count as
    ``near_zero``); None where every eigenvalue is zero. ``vanishing``: max|λ| <= atol, a flat point.
    """
    values = eigenvalues.to(torch.float64).flatten()
    size = values.abs()
    top = float(size.max()) if values.numel() else 0.0
    kept = size[size > rtol * top] if top > 0 else size[:0]
    bottom = float(kept.min()) if kept.numel() else None
    return {
        "n": int(values.numel()),
        "max_abs": top,
        "min_abs": bottom,
        "largest": float(values.max()) if values.numel() else math.nan,
        "smallest": float(values.min()) if values.numel() else math.nan,
        "condition": top / bottom if bottom else None,
        "near_zero": int(values.numel() - kept.numel()),
        "negative": int((values < -rtol * top).sum()) if top > 0 else 0,
        "vanishing": top <= atol,
    }
