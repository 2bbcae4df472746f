"""Norm and activation layers resolved from names, so configs and the CLI can choose them as strings.

Blocks receive ``norm`` and ``act`` as callables (flax-style), never strings; this table is the one place
where a name becomes a layer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from resnets.errors import UnknownNameError

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


def _group_norm(num_channels: int, groups: int = 32) -> nn.Module:
    """GroupNorm with at most ``groups`` groups, falling back to a divisor of ``num_channels``."""
    groups = min(groups, num_channels)
    while num_channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, num_channels)


_NORMS: dict[str, NormLayer] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm1d": nn.BatchNorm1d,
    "groupnorm": _group_norm,
    "layernorm": nn.LayerNorm,
    "identity": lambda num_channels: nn.Identity(),
}

_ACTS: dict[str, ActLayer] = {
    "relu": partial(nn.ReLU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def get_norm(name: str) -> NormLayer:
    """The norm-layer constructor called ``name`` (``batchnorm``, ``groupnorm``, ...)."""
    try:
        return _NORMS[name]
    except KeyError:
        raise UnknownNameError("norm layer", name, _NORMS) from None


def get_act(name: str) -> ActLayer:
    """The activation constructor called ``name`` (``relu``, ``gelu``, ...)."""
    try:
        return _ACTS[name]
    except KeyError:
        raise UnknownNameError("activation", name, _ACTS) from None
