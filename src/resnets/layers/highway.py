"""Highway layers (Srivastava, Greff & Schmidhuber 2015, "Training Very Deep Networks").

y = H(x) * T(x) + x * C(x), with a transform gate T(x) = sigmoid(W_T x + b_T). The gate bias b_T starts
negative (the paper suggests -1 to -3 and uses -2 for its deepest nets) so that T is small and each layer
starts close to carrying its input unchanged: information and gradients cross a deep stack at
initialisation, which is what lets the paper train 100-layer plain-style networks with SGD.

The carry gate is coupled, C = 1 - T (the paper's choice), unless ``carry="independent"``: then C has its own
weights and a bias of ``-gate_bias`` (+2 by default), so it starts open just as the coupled one does.

The gates are modules (``transform_gate``, ``carry_gate``) whose outputs are the gate values, so an
instrument can read T(x) with a forward hook instead of recomputing it; ``gate()``, the unit interface's way
to reach it, returns the transform gate.

A highway layer is a :class:`~resnets.layers.skip_unit.SkipUnit` whose branch is H(x) * T(x) and whose
shortcut is the carry x * C(x): ``residual_scale`` multiplies H * T, and a lesioned layer outputs its carry
alone, as a lesioned residual block outputs its shortcut (Veit et al. 2016). While nothing reads or changes
the sum, a coupled layer computes x + T * (H - x) instead, which is equal and needs one fewer full-size product.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.skip_unit import SkipUnit, UnitShape

CARRY_OPTIONS = ("coupled", "independent")


class HighwayGate(nn.Module):
    """sigmoid(affine(x)): an affine map (a Linear or a same-shape Conv2d) with its bias set to ``bias``."""

    def __init__(self, affine: nn.Linear | nn.Conv2d, bias: float) -> None:
        super().__init__()
        self.affine = affine
        self.initial_bias = float(bias)
        self.reset_bias()

    def reset_bias(self) -> None:
        """Set the bias to its initial value (model-wide weight inits call this after touching biases)."""
        nn.init.constant_(self.affine.bias, self.initial_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.affine(x))  # same shape as x, values in (0, 1)


class HighwayLayer(SkipUnit):
    """y = scale * H(x) * T(x) + x * C(x); H, T and C keep the shape of x, so the carry needs no projection."""

    def __init__(
        self,
        transform: nn.Module,
        transform_gate: HighwayGate,
        carry_gate: HighwayGate | None,
        *,
        residual_scale: float = 1.0,
    ) -> None:
        affine = transform_gate.affine
        width = affine.in_features if isinstance(affine, nn.Linear) else affine.in_channels
        super().__init__(UnitShape(width, width), residual_scale=residual_scale, has_shortcut=True)
        self.transform = transform  # H, the plain layer
        self.transform_gate = transform_gate  # T
        self.carry_gate = carry_gate  # C; None means coupled, C = 1 - T

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """H(x) * T(x), the transformed part, and the carry x * C(x)."""
        h = self.transform(x)
        t = self.transform_gate(x)
        carry = 1 - t if self.carry_gate is None else self.carry_gate(x)
        return h * t, x * carry  # same shape as x each

    def gate(self) -> HighwayGate:
        return self.transform_gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.carry_gate is None and not self.instrumented:
            # h * t + x * (1 - t) as x + t * (h - x): one fewer full-size product, and no separate terms to build.
            h = self.transform(x)
            return x + self.transform_gate(x) * (h - x)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"carry={'coupled' if self.carry_gate is None else 'independent'}"


def _check_carry(carry: str) -> None:
    if carry not in CARRY_OPTIONS:
        raise ValueError(f"carry must be one of {list(CARRY_OPTIONS)}, got {carry!r}")


def highway_linear(width: int, *, act: ActLayer, gate_bias: float = -2.0, carry: str = "coupled") -> HighwayLayer:
    """A fully connected highway layer: H(x) = act(W_H x + b_H), as in the paper's MNIST networks."""
    _check_carry(carry)
    carry_gate = HighwayGate(nn.Linear(width, width), -gate_bias) if carry == "independent" else None
    return HighwayLayer(
        nn.Sequential(nn.Linear(width, width), act()), HighwayGate(nn.Linear(width, width), gate_bias), carry_gate
    )


def highway_conv(
    channels: int, *, act: ActLayer, norm: NormLayer, gate_bias: float = -2.0, carry: str = "coupled"
) -> HighwayLayer:
    """A convolutional highway layer: H(x) = act(norm(conv3x3(x))), T and C are 3x3 convs + sigmoid.

    The paper's convolutional highway layers use the same kernel size for H and T (3x3 in its CIFAR nets);
    ``norm`` is the identity by default (the paper predates wide use of batch norm), and then H's conv has a bias.
    """
    _check_carry(carry)
    with_bias = isinstance(norm(channels), nn.Identity)

    def conv(bias: bool) -> nn.Conv2d:
        return nn.Conv2d(channels, channels, 3, padding=1, bias=bias)

    carry_gate = HighwayGate(conv(True), -gate_bias) if carry == "independent" else None
    return HighwayLayer(
        nn.Sequential(conv(with_bias), norm(channels), act()), HighwayGate(conv(True), gate_bias), carry_gate
    )
