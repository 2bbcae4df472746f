"""Filter-normalised random directions in weight space, and moving a model along them in place.

Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural Nets", NeurIPS, Sec. 4)
plot f(θ + α d1 + β d2) for Gaussian directions d. Raw Gaussian directions are not comparable between nets
(or layers) because a ReLU net is invariant to rescaling a filter's weights; so each filter of d (each slice
along the first dimension of a weight tensor: a conv output channel, a linear layer's output unit) is scaled
to the norm of the same filter of θ. Like the paper's figures, the direction is zero in every 1-D (or 0-D)
parameter, that is every bias and every BatchNorm/LayerNorm scale and shift: those stay at θ. Buffers (BN
running statistics) are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

Direction = dict[str, torch.Tensor]  # parameter name -> displacement of its shape (on the CPU, float32)
EPS = 1e-10  # as in the paper's code: keeps an all-zero filter of θ from dividing by zero


def moves(parameter: torch.Tensor) -> bool:
    """Whether directions move this parameter: weight tensors do; biases and norm scales/shifts (1-D) do not."""
    return parameter.dim() >= 2


def filter_normalize(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``direction`` with each filter (slice along dim 0) scaled to the norm of ``weight``'s filter; zero for 1-D."""
    if not moves(weight):
        return torch.zeros_like(direction)
    d = direction.reshape(direction.shape[0], -1)  # (filters, fan-in)
    w = weight.detach().to(direction).reshape(weight.shape[0], -1)
    scale = w.norm(dim=1) / (d.norm(dim=1) + EPS)  # (filters,)
    return (d * scale[:, None]).reshape(direction.shape)


def random_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A filter-normalised Gaussian direction for every parameter of ``model`` (zero where it does not move).

    The Gaussian values are drawn on the CPU in parameter order, only for the parameters that move, so the
    direction depends on the generator's seed and the weight shapes alone (not on the device or on BN).
    """
    direction: Direction = {}
    for name, parameter in model.named_parameters():
        if moves(parameter):
            raw = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            direction[name] = filter_normalize(raw, parameter.detach().cpu())
        else:
            direction[name] = torch.zeros(parameter.shape, dtype=torch.float32)
    return direction


@contextmanager
def displaced(model: nn.Module, directions: Sequence[Direction]) -> Iterator[Callable[[Sequence[float]], None]]:
    """Yields ``move(coefficients)``, which writes θ + Σ c_k d_k into the moving parameters in place.

    θ is copied on entry and written back on exit (checked bit for bit). No autograd and no new modules: one
    model and its pre-made batches serve the whole grid. At all-zero coefficients the weights are exactly θ.
    """
    moving = []
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if moves(parameter):
                along = [d[name].to(device=parameter.device, dtype=parameter.dtype) for d in directions]
                moving.append((parameter, parameter.detach().clone(), along))

    def move(coefficients: Sequence[float]) -> None:
        if len(coefficients) != len(directions):
            raise ValueError(f"{len(coefficients)} coefficients for {len(directions)} directions")
        with torch.no_grad():
            for parameter, theta, along in moving:
                parameter.copy_(theta)
                for c, d in zip(coefficients, along):
                    if c:
                        parameter.add_(d, alpha=float(c))

    try:
        yield move
    finally:
        with torch.no_grad():
            for parameter, theta, _ in moving:
                parameter.copy_(theta)
                if not torch.equal(parameter, theta):
                    raise RuntimeError("the weights could not be restored to θ after the landscape")
