"""The residual unit that every block family shares: y = post(scale * drop_path(F(x)) + shortcut(x)).

Subclasses compute F(x) and the shortcut in ``residual_and_shortcut`` (they may share work, as
pre-activation blocks do) and say what follows the sum in ``post``. The sum itself, with residual scaling,
stochastic depth, lesions and taps, lives once in :class:`~resnets.layers.skip_unit.SkipUnit`, which highway,
dense and multi-skip layers share too, so that these behave the same in every family.
"""

from __future__ import annotations

import torch

from resnets.layers.skip_unit import SkipUnit, UnitShape


class ResidualUnit(SkipUnit):
    """Base of residual blocks: a :class:`SkipUnit` with stochastic depth and a ``downsample`` shortcut.

    Attributes read by instruments (see ``SkipUnit`` for the rest):
        residual_scale: constant multiplying F(x) (1.0; 0.1-0.3 as in Inception-ResNet; 0 silences the branch).
        has_shortcut: False in plain mode, where the unit outputs post(F(x)).
    """

    def __init__(
        self,
        drop_path: float = 0.0,
        residual_scale: float = 1.0,
        has_shortcut: bool = True,
        *,
        io_shape: UnitShape | None = None,
    ) -> None:
        super().__init__(io_shape, residual_scale=residual_scale, has_shortcut=has_shortcut, drop_path=drop_path)

    def skip(self, x: torch.Tensor, projected_from: torch.Tensor | None = None) -> torch.Tensor | None:
        """The shortcut's output: None in plain mode, ``x`` for identity, else ``downsample`` applied to
        ``projected_from`` (pre-activation units project their activated input) or to ``x``."""
        if not self.has_shortcut:
            return None
        downsample = getattr(self, "downsample", None)
        if downsample is None:
            return x
        return downsample(x if projected_from is None else projected_from)

    def zero_init_last(self) -> None:
        """Zero the last scale of F so the unit starts as its shortcut (Goyal et al. 2017)."""
        raise NotImplementedError
