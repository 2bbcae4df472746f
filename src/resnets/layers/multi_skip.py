"""Skip matrices and the fully connected layer that sums them: the general form of a skip connection.

    a^l = g(W^{l-1,l} a^{l-1} + b^l + sum_{k in skips} W^{l-k,l} a^{l-k})

A skip of distance k enters every layer l >= k (a^0, the input projection, counts as a layer), not every k-th
layer: with one skip of distance 2 and W^{l-2,l} = I, every layer from 2 on is a^l = g(z^l + a^{l-2}), so the
skips overlap (layer 3 reads a^1, layer 4 reads a^2, ...), unlike He et al. 2015's blocks of two layers, where
a shortcut enters every second layer only. With several distances it is the multi-skip form; with W^{l-k,l}
learned it is a learned skip, trained by ordinary backpropagation: dL/dW^{l-k,l} = delta^l (a^{l-k})^T, where
delta^l = dL/d(pre-activation of layer l).

A fixed skip is :class:`IdentitySkip`: no parameters at all, so no optimiser can change it (a frozen
Linear would still be a parameter that weight decay, a checkpoint or a careless ``requires_grad_()`` could
touch). Where m skips enter one layer, each carries weight 1/m (a learned one starts from I/m), so that the
skips add their average; m counts the distances k <= l, so with skips (2, 3, 4) layer 2 gets a^0 with weight
1, layer 3 gets a^1 and a^0 with 1/2 each, and every layer from 4 on gets three skips of 1/3. With unit
weights the activations would grow geometrically with depth (a^l ~ a^{l-2} + a^{l-3} + a^{l-4} grows like
1.47^l, the root of r^4 = r^2 + r + 1). With one skip, m = 1 and the skip is exactly the identity.

A layer is a :class:`~resnets.layers.skip_unit.SkipUnit` whose branch is z^l = norm(W^{l-1,l} a^{l-1} + b^l) and
whose shortcut is the sum of its skips, a^l = g(scale * z^l + sum_k S_k a^{l-k}): ``residual_scale`` multiplies
z^l, and a lesioned layer outputs g(sum of its skips), as a lesioned residual block outputs its shortcut (Veit
et al. 2016). A layer without skips (the plain twin, or layer 1 when every distance exceeds 1) becomes the
identity, a^l = a^{l-1}, as the paper's lesioned VGG layers do. While nothing reads or changes the sum, a layer
adds its skips to z^l one by one, as it always did, rather than summing them first.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.layers.factory import ActLayer, NormLayer
from resnets.layers.skip_unit import SkipUnit, UnitShape

SKIP_KINDS = ("identity", "learned")
LEARNED_INITS = ("identity", "zeros", "random")


class IdentitySkip(nn.Module):
    """W = scale * I, fixed: no parameters, never updated."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale == 1.0 else x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class LearnedSkip(nn.Linear):
    """W^{l-k,l}, a bias-free Linear (the layer's one bias b^l lives in its main path).

    ``init``: ``identity`` (scale * I, so the network starts as its fixed-identity twin and learning only
    departs from it), ``zeros`` (starts as the plain network), or ``random`` (N(0, scale^2 / width), a
    variance-preserving random skip).
    """

    def __init__(self, width: int, scale: float = 1.0, init: str = "identity") -> None:
        if init not in LEARNED_INITS:
            raise ValueError(f"learned skip init must be one of {list(LEARNED_INITS)}, got {init!r}")
        self.scale, self.init = float(scale), init
        super().__init__(width, width, bias=False)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "identity":
                self.weight.copy_(torch.eye(self.in_features) * self.scale)
            elif self.init == "zeros":
                self.weight.zero_()
            else:
                self.weight.normal_(0.0, self.scale / self.in_features**0.5)


def make_skip(kind: str, width: int, scale: float = 1.0, init: str = "identity") -> nn.Module:
    """The skip matrix of one connection: a fixed identity or a learned matrix."""
    if kind not in SKIP_KINDS:
        raise ValueError(f"skip kind must be one of {list(SKIP_KINDS)}, got {kind!r}")
    return IdentitySkip(scale) if kind == "identity" else LearnedSkip(width, scale, init)


class MultiSkipLayer(SkipUnit):
    """One layer l: a^l = g(norm(W^{l-1,l} a^{l-1} + b^l) + sum_k S_k a^{l-k}); ``skips`` keyed ``k<distance>``.

    With ``norm`` the identity this is the formula exactly; a norm on z^l (LayerNorm by default in the
    models) keeps z^l at unit scale in deep stacks without touching the skip paths.
    """

    def __init__(
        self,
        width: int,
        distances: tuple[int, ...],
        *,
        kind: str = "identity",
        learned_init: str = "identity",
        norm: NormLayer = nn.LayerNorm,
        act: ActLayer = nn.ReLU,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(UnitShape(width, width), residual_scale=residual_scale, has_shortcut=bool(distances))
        self.linear = nn.Linear(width, width)  # W^{l-1,l} and b^l
        self.norm = norm(width)
        self.skips = nn.ModuleDict(
            {f"k{k}": make_skip(kind, width, 1.0 / len(distances), learned_init) for k in distances}
        )
        self.distances = tuple(distances)
        self.act = act()

    def residual_and_shortcut(self, history: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z^l and the sum of the skips (None without skips); ``history[-k]`` is a^{l-k}."""
        z = self.norm(self.linear(history[-1]))  # (B, width)
        skips = None
        for k in self.distances:
            skip = self.skips[f"k{k}"](history[-k])
            skips = skip if skips is None else skips + skip
        return z, skips

    def pre_activation(self, history: list[torch.Tensor]) -> torch.Tensor:
        """z^l plus the skips, added one by one; ``history[-k]`` is a^{l-k}."""
        out = self.norm(self.linear(history[-1]))  # (B, width)
        for k in self.distances:
            out = out + self.skips[f"k{k}"](history[-k])
        return out

    def post(self, y: torch.Tensor) -> torch.Tensor:
        return self.act(y)

    def forward(self, history: list[torch.Tensor]) -> torch.Tensor:
        if not self.instrumented:  # the same sum, in the order it always had: ((z + S_2 a) + S_3 a) + ...
            return self.act(self.pre_activation(history))  # (B, width)
        branch, shortcut = self.residual_and_shortcut(history)
        return self.combine(branch, shortcut, history[-1])

    def extra_repr(self) -> str:
        return f"distances={self.distances}"
