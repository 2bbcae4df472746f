"""Residual MLPs for vector data: fixed, learned and multiple skips (see ``resnets.layers.multi_skip``).

a^0 = g(norm(W^0 x + b^0)) projects the input to ``width`` units; layers l = 1..depth compute
a^l = g(z^l + sum_{k in skips, k <= l} W^{l-k,l} a^{l-k}), so a skip of distance k enters every layer
that has a layer k below it (a^0 counts): every layer l >= k, not every k-th layer. A fixed skip is
W^{l-k,l} = I/m, m the number of skips entering layer l (I for a single distance); a learned one starts
there with ``learned_init="identity"``. The classifier reads norm(a^depth): identity skips add up, so a^depth
grows with depth, and a final norm (as in pre-norm Transformers) keeps the first logits small. With
``skips=()`` the network is the plain twin of the same depth and width.

``residual_scale`` s multiplies z^l in every layer that has a skip, a^l = g(s z^l + sum_k S_k a^{l-k}), as
Inception-ResNet scales its residuals by 0.1-0.3 before the addition (Szegedy et al. 2016, Sec. 3.3);
"inv_sqrt_depth" takes s = 1/sqrt(L), L the number of layers with a skip, which keeps the sum of the squared
scales at 1 whatever the depth (Hanin & Rolnick 2018). Layers without a skip are not scaled: their output
is the whole signal, not a residual added to one. With ``norm="identity"`` nothing normalises z^l or the
classifier's input, the setting in which the scale matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from resnets.layers.factory import get_act, get_norm
from resnets.layers.multi_skip import LEARNED_INITS, SKIP_KINDS, MultiSkipLayer
from resnets.models.base import SkipNetwork, make_classifier
from resnets.models.options import refuse_inapplicable
from resnets.models.registry import register_model


@dataclass(frozen=True)
class ResMLPConfig:
    """Depth, width and the skip pattern of a residual MLP."""

    depth: int = 20  # layers after the input projection
    width: int = 128
    skips: tuple[int, ...] = (2,)  # skip distances k >= 2 (distance 1 is the main path)
    skip_kind: str = "identity"  # identity: fixed, no parameters | learned: a bias-free Linear per skip
    learned_init: str = "identity"  # identity | zeros | random (learned skips only)
    norm: str = "layernorm"  # on z^l; identity gives the bare formula
    act: str = "relu"
    residual_scale: float | str = 1.0  # multiplies z^l in layers with skips; "inv_sqrt_depth": 1/sqrt(#such layers)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")
        if any(k < 2 for k in self.skips) or len(set(self.skips)) != len(self.skips):
            raise ValueError(f"skips must be distinct distances >= 2, got {self.skips}")
        if self.skip_kind not in SKIP_KINDS:
            raise ValueError(f"skip_kind must be one of {list(SKIP_KINDS)}, got {self.skip_kind!r}")
        if self.learned_init not in LEARNED_INITS:
            raise ValueError(f"learned_init must be one of {list(LEARNED_INITS)}, got {self.learned_init!r}")
        if isinstance(self.residual_scale, str) and self.residual_scale != "inv_sqrt_depth":
            raise ValueError(f"residual_scale must be a number or 'inv_sqrt_depth', got {self.residual_scale!r}")
        unreached = [k for k in self.skips if k > self.depth]
        if unreached:  # a skip of distance k enters layer l only where k <= l (a^0 counts)
            raise ValueError(
                f"skip distances {unreached} exceed depth {self.depth}: no layer has a layer that far below it, "
                f"so those skips would never be used; use depth >= {max(unreached)} or drop those distances"
            )
        refuse_inapplicable(self, self._inapplicable())

    def _inapplicable(self) -> dict[str, str]:
        """The skip fields that the chosen skip pattern cannot use, each with the reason (an error if set)."""
        if not self.skips:
            plain = "a net without skips (skips=()), the plain twin"
            return dict.fromkeys(("skip_kind", "learned_init", "residual_scale"), plain)
        if self.skip_kind != "learned":
            return {"learned_init": f"{self.skip_kind} skips, only to learned skips (skip_kind='learned')"}
        return {}

    @property
    def skip_layers(self) -> int:
        """Layers that have a skip: l >= the smallest distance (a^0 counts), so depth - min(skips) + 1."""
        return max(0, self.depth - min(self.skips) + 1) if self.skips else 0

    @property
    def scale(self) -> float:
        """The residual scale as a number (1/sqrt(skip layers) for "inv_sqrt_depth")."""
        if self.residual_scale == "inv_sqrt_depth":
            return 1.0 / math.sqrt(self.skip_layers)
        return float(self.residual_scale)


class ResMLP(SkipNetwork):
    """Input projection -> ``depth`` multi-skip layers -> final norm -> Linear classifier."""

    input_kind = "vector"
    final_norm_name = "final_norm"

    def __init__(self, config: ResMLPConfig, *, num_classes: int = 10, in_channels: int = 784) -> None:
        super().__init__()
        self.config, self.num_classes, self.in_channels = config, num_classes, in_channels
        # Vectors have no spatial axes: "batchnorm" is BatchNorm1d here (BatchNorm2d would refuse a (B, width) input).
        norm, act = get_norm("batchnorm1d" if config.norm == "batchnorm" else config.norm), get_act(config.act)
        self.stem = nn.Sequential(nn.Linear(in_channels, config.width), norm(config.width), act())
        reached = [tuple(k for k in config.skips if k <= l) for l in range(1, config.depth + 1)]
        self.layers = nn.ModuleList(
            MultiSkipLayer(
                config.width,
                distances,
                kind=config.skip_kind,
                learned_init=config.learned_init,
                norm=norm,
                act=act,
                residual_scale=config.scale if distances else 1.0,
            )
            for distances in reached
        )
        self.final_norm = norm(config.width)
        self.num_features = config.width
        # Feature i is a^{i+1}, the output of layer i + 1 (a^0, the input projection, is not a feature point).
        self.feature_info = [
            {"num_chs": config.width, "reduction": 1, "module": f"layers.{i}"} for i in range(config.depth)
        ]
        self.fc = make_classifier(config.width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        keep = max(self.config.skips, default=1)
        history = [self.stem(x)]  # a^0: (B, width)
        for layer in self.layers:
            history.append(layer(history))
            del history[:-keep]  # only the last max(skips) activations can still be reached
        return self.final_norm(history[-1])  # norm(a^depth): (B, width)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [(f"layers.{i}", 1, layer) for i, layer in enumerate(self.layers)]


MODELS: dict[str, tuple[ResMLPConfig, str]] = {
    "resmlp_plain_20": (ResMLPConfig(skips=()), "20-layer MLP without skips: the plain twin"),
    "resmlp_identity_20": (
        ResMLPConfig(),
        "20-layer MLP, a fixed identity skip of distance 2 into every layer l >= 2: a^l = g(z^l + a^{l-2})",
    ),
    "resmlp_learned_20": (
        ResMLPConfig(skip_kind="learned"),
        "20-layer MLP, a learned skip matrix W^{l-2,l} into every layer l >= 2 (init identity)",
    ),
    "resmlp_multiskip_20": (
        ResMLPConfig(skips=(2, 3, 4)),
        (
            "20-layer MLP, fixed skips of distances 2, 3, 4 into every layer l >= k, weight 1/m for the m entering "
            "(1 at layer 2, 1/2 at layer 3, 1/3 from layer 4 on)"
        ),
    ),
    "resmlp_multiskip_learned_20": (
        ResMLPConfig(skips=(2, 3, 4), skip_kind="learned"),
        "20-layer MLP, learned skips of distances 2, 3, 4 into every layer l >= k (init identity / m, m entering)",
    ),
}

for _name, (_config, _text) in MODELS.items():
    register_model(_name, ResMLP, _config, num_classes=10, input_size=(784,), family="resmlp", description=_text)
