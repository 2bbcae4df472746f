"""The one interface of every skip-connection unit: y = post(join(scale * drop_path(F(x)), shortcut(x))).

Residual blocks, highway layers, dense layers and multi-skip layers differ in what F and the shortcut are and
in what follows their sum, but an instrument asks the same three questions of each: what does the branch add
(read it: taps), what happens when it adds less (``residual_scale``), and what happens without it (a lesion).
Each family says how it computes the branch and the shortcut (``residual_and_shortcut``) and what follows the
sum (``post``); :meth:`SkipUnit.combine` is the one place that applies drop path, scaling, lesions and taps,
so these behave the same in every family. Two joins exist: ``add`` (ResNets, highway, residual MLPs and
Transformers sum the branch into the shortcut) and ``concat`` (a dense layer returns only its new features;
its block concatenates them with the shortcut, the earlier feature maps).

A lesion deletes a unit at test time, as Veit, Wilber & Belongie 2016 ("Residual Networks Behave Like
Ensembles of Relatively Shallow Networks") do to show that a ResNet's paths are largely independent while a
plain (VGG-style) network breaks: a lesioned unit outputs its shortcut, post(shortcut(x)) (a highway layer its
carry x * C(x); a dense layer zeros in place of its new features, so its block keeps its channel count). A unit
without shortcut becomes the identity where its input and output shapes match (the whole unit is skipped,
post-activation included, as in the paper's VGG lesions) and cannot be lesioned where they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnets.errors import LesionError
from resnets.layers.checkpointing import checkpoint_module, has_forward_hooks
from resnets.layers.drop_path import DropPath

#: A tap receives (branch F(x) before drop path and scaling, shortcut output or None) on every forward pass.
Tap = Callable[[torch.Tensor, torch.Tensor | None], None]


@dataclass(frozen=True)
class UnitShape:
    """Channels into and out of a unit (for a dense layer: of its block, before and after it) and its stride."""

    in_channels: int
    out_channels: int
    stride: int = 1

    @property
    def changes(self) -> bool:
        return self.in_channels != self.out_channels or self.stride != 1

    def __str__(self) -> str:
        channels = (
            f"{self.in_channels} -> {self.out_channels} channels"
            if self.in_channels != self.out_channels
            else f"{self.in_channels} channels"
        )
        return channels + (f", stride {self.stride}" if self.stride != 1 else "")


class UnitCapture:
    """What a tap saw on the last forward pass: ``branch`` = F(x), ``shortcut`` (None without shortcut).

    Copies (detached clones): post-activation blocks apply their ReLU in place after the sum, and a plain
    block applies it to F(x) itself.
    """

    def __init__(self) -> None:
        self.branch: torch.Tensor | None = None
        self.shortcut: torch.Tensor | None = None
        self.calls = 0  # forward passes seen

    def __call__(self, branch: torch.Tensor, shortcut: torch.Tensor | None) -> None:
        self.branch = branch.detach().clone()
        self.shortcut = None if shortcut is None else shortcut.detach().clone()
        self.calls += 1


class SkipUnit(nn.Module):
    """Base of every skip-connection unit.

    Attributes read by instruments:
        residual_scale: constant multiplying F(x) (1.0; 0.1-0.3 as in Inception-ResNet; 0 silences the branch).
        has_shortcut: False for plain units, which output post(F(x)).
        io_shape: channels in and out and the stride; ``changes_shape`` says whether they differ.
        num_branches: parallel residual functions (k for a multi-residual block, else 1).
        lesioned_branches: the branches deleted now (all of them: the unit is lesioned); see ``lesioned``.
        taps: callbacks receiving (branch, shortcut) on every forward pass; see ``capture``.
        grad_checkpointing: keep only the input for backward and recompute the unit there (see ``__call__``).
    """

    num_branches: int = 1
    join: str = "add"  # add: y = post(branch + shortcut) | concat: y = branch; the container concatenates
    grad_checkpointing: bool = False  # set for a whole model by SkipNetwork.set_grad_checkpointing

    def __init__(
        self,
        io_shape: UnitShape | None = None,
        *,
        residual_scale: float = 1.0,
        has_shortcut: bool = True,
        drop_path: float | None = None,
    ) -> None:
        super().__init__()
        # Stochastic depth only where a family asks for it, so that other families keep their module names.
        self.drop_path = DropPath(drop_path) if drop_path is not None else None
        self.residual_scale = float(residual_scale)
        self.has_shortcut = has_shortcut
        self.io_shape = io_shape
        self.lesioned_branches: tuple[int, ...] = ()
        self.is_lesioned = False  # every branch lesioned: the unit outputs its shortcut
        self.taps: list[Tap] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The module call, checkpointed while training with ``grad_checkpointing`` on (Chen et al. 2016).

        Here, around every family's ``forward``, so one flag covers them all. An observed unit (taps, a lesion,
        forward hooks) runs as usual: its instruments must see each forward pass once, not again in backward.
        """
        if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not self.observed:
            return checkpoint_module(super().__call__, self, args, kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def observed(self) -> bool:
        """Whether anything reads this unit's forward pass: a tap, a lesion, a forward hook on it or inside it."""
        return bool(self.taps) or self.is_lesioned or has_forward_hooks(self)

    # -- what each family provides ----------------------------------------------------------------------

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """F(x) and the shortcut's output (None for a plain unit)."""
        raise NotImplementedError

    def gate(self) -> nn.Module | None:
        """The module whose output is the unit's transform gate T(x) in (0, 1), for a forward hook to read
        (a highway layer's); None for units whose branch is not gated."""
        return None

    def post(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the sum: ReLU for post-activation blocks, nothing for pre-activation ones."""
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.residual_and_shortcut(x)
        return self.combine(branch, shortcut, x)

    # -- the one place where branch and shortcut meet ---------------------------------------------------

    def combine(
        self, branch: torch.Tensor, shortcut: torch.Tensor | None, unit_input: torch.Tensor | None
    ) -> torch.Tensor:
        """post(scale * drop_path(branch) + shortcut), with taps and lesions; ``unit_input`` is what a lesioned
        unit without shortcut returns (the identity)."""
        if self.taps:
            for tap in self.taps:
                tap(branch, shortcut)
        if self.is_lesioned:
            return self._lesioned_output(branch, shortcut, unit_input)
        drop_path = self.drop_path
        if drop_path is not None:
            branch = drop_path(branch)
        if self.residual_scale != 1.0:
            branch = branch * self.residual_scale
        if shortcut is None or self.join == "concat":
            return self.post(branch)
        return self.post(branch + shortcut)

    def _lesioned_output(
        self, branch: torch.Tensor, shortcut: torch.Tensor | None, unit_input: torch.Tensor | None
    ) -> torch.Tensor:
        if self.join == "concat":  # the container still concatenates the shortcut: the new features are zero
            return torch.zeros_like(branch)
        if shortcut is None:  # plain and shape-preserving (``lesion`` refused the others): the identity
            if unit_input is None:
                raise RuntimeError(f"{type(self).__name__} has no shortcut and passed no input to combine()")
            return unit_input
        # A copy, since post may act in place and an identity shortcut is the input itself.
        return self.post(shortcut.clone())

    @property
    def instrumented(self) -> bool:
        """Whether anything reads or changes the sum: a tap, a lesion, a scale other than 1 or drop path.

        Where nothing does, a family may evaluate post(branch + shortcut) in a cheaper form that never builds
        the two terms (a coupled highway layer's x + T * (H - x)); ``combine`` is the definition it must match.
        """
        return bool(self.taps) or self.is_lesioned or self.residual_scale != 1.0 or self.drop_path is not None

    # -- properties and state changes used by instruments ----------------------------------------------

    @property
    def changes_shape(self) -> bool:
        """Whether the output shape differs from the input's (stride or channel change)."""
        if self.io_shape is None:
            raise NotImplementedError(f"{type(self).__name__} does not declare its io_shape")
        return self.io_shape.changes

    def lesion(self, branch: int | None = None, name: str | None = None) -> None:
        """Delete the unit (``branch=None``) or one of its branches until ``restore``; ``name`` is for messages."""
        label = f"unit {name!r} ({type(self).__name__})" if name else f"unit {type(self).__name__}"
        if branch is None:
            branches = tuple(range(self.num_branches))
        elif not 0 <= branch < self.num_branches:
            raise LesionError(
                f"cannot lesion branch {branch} of {label}: it has {self.num_branches} branch(es), "
                f"numbered 0 to {self.num_branches - 1}"
            )
        else:
            branches = tuple(sorted({*self.lesioned_branches, branch}))
        whole = len(branches) == self.num_branches
        if whole and not self.has_shortcut and self.changes_shape:
            raise LesionError(
                f"cannot lesion {label}: it has no shortcut and changes the shape ({self.io_shape}); "
                f"only units whose input and output shapes match can become the identity"
            )
        self.lesioned_branches, self.is_lesioned = branches, whole

    def restore(self, branches: tuple[int, ...] = ()) -> None:
        """Undo lesions: back to no lesion, or to the lesioned ``branches`` given."""
        self.lesioned_branches = tuple(branches)
        self.is_lesioned = len(self.lesioned_branches) == self.num_branches

    @contextmanager
    def lesioned(self, branch: int | None = None, name: str | None = None) -> Iterator[SkipUnit]:
        """The unit (or one branch) deleted inside the ``with`` block, restored on exit, also on exceptions."""
        previous = self.lesioned_branches
        self.lesion(branch, name)
        try:
            yield self
        finally:
            self.restore(previous)

    @contextmanager
    def scaled(self, factor: float) -> Iterator[SkipUnit]:
        """``residual_scale = factor`` inside the ``with`` block; the previous scale comes back on exit."""
        previous = self.residual_scale
        self.residual_scale = float(factor)
        try:
            yield self
        finally:
            self.residual_scale = previous

    @contextmanager
    def tapped(self, tap: Tap) -> Iterator[Tap]:
        """``tap`` called with (branch, shortcut) on every forward pass inside the ``with`` block."""
        self.taps.append(tap)
        try:
            yield tap
        finally:
            self.taps.remove(tap)

    @contextmanager
    def capture(self) -> Iterator[UnitCapture]:
        """A :class:`UnitCapture` holding the branch and shortcut of the last forward pass in the block."""
        capture = UnitCapture()
        with self.tapped(capture):
            yield capture

    def extra_repr(self) -> str:
        return f"residual_scale={self.residual_scale}, has_shortcut={self.has_shortcut}"
