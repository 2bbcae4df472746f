"""The interface every model shares, so tools attach to any model the same way (timm-style).

A model is ``forward_features`` (the trunk, no pooling) followed by ``forward_head`` (pool, flatten,
classifier). ``residual_blocks()`` lists the skip-connection units in order with their stage, so that
instruments (lesion studies, gradient probes, rescaling) work on any family without special cases.

Every unit is a :class:`~resnets.layers.skip_unit.SkipUnit`, and :class:`BlockInfo` carries its operations:
``lesioned()`` deletes it for the ``with`` block (Veit et al. 2016, "Residual Networks Behave Like Ensembles
of Relatively Shallow Networks"), ``scaled()`` rescales its branch, ``capture()`` reads its branch and
shortcut; :func:`capture_units` reads many units in one forward pass.

``feature_info`` and ``forward_intermediates`` give the stem and stage outputs as timm does (see
:mod:`resnets.models.features`), and no Python branch depends on a tensor's shape or rank while tracing, so
``torch.fx.symbolic_trace`` and torchvision's ``create_feature_extractor`` work on every model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import _symbolic_trace

from resnets.errors import InputShapeError
from resnets.layers.skip_unit import SkipUnit, Tap, UnitCapture
from resnets.models.features import Indices, forward_intermediates

#: What a model's input looks like: images (B, C, H, W), vectors (B, D) or sequences (B, T, D).
INPUT_RANKS = {"image": 4, "vector": 2, "sequence": 3}

_SHAPES = {"image": "(batch, {c}, height, width)", "vector": "(batch, {c})", "sequence": "(batch, tokens, {c})"}

#: The layout of intermediates by input kind: (B, C, H, W) maps, (B, D) vectors, (B, T, D) tokens.
INTERMEDIATE_FORMATS = {"image": ("NCHW",), "vector": ("NC",), "sequence": ("NLC",)}


def is_tracing() -> bool:
    """Whether the forward pass is being traced, scripted, compiled or exported rather than run.

    Input checks are Python branches on concrete shapes; a tracer's tensors have none (torch.fx raises on
    them), and a traced graph would bake the check of one example input in. torch.fx's own flag has no
    public name; newer versions tell fx tracing from export apart (``is_fx_symbolic_tracing``).
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return True
    fx_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None) or _symbolic_trace.is_fx_tracing
    return fx_tracing()


@dataclass(frozen=True)
class BlockInfo:
    """One residual (skip-connection) unit of a model, in forward order."""

    name: str  # qualified module name, e.g. "layer2.0"
    stage: int  # 1-based stage (resolution level); 1 for families without stages
    index: int  # 0-based position among all residual units
    module: nn.Module

    @property
    def unit(self) -> SkipUnit:
        """The module as a :class:`SkipUnit` (every registered family's units are)."""
        if not isinstance(self.module, SkipUnit):
            raise TypeError(f"unit {self.name!r} is a {type(self.module).__name__}, not a SkipUnit")
        return self.module

    @property
    def has_shortcut(self) -> bool:
        return self.unit.has_shortcut

    @property
    def changes_shape(self) -> bool:
        """Whether the unit's output shape differs from its input's (a dense layer's: its block grows)."""
        return self.unit.changes_shape

    @property
    def num_branches(self) -> int:
        return self.unit.num_branches

    @contextmanager
    def lesioned(self, branch: int | None = None) -> Iterator[BlockInfo]:
        """The unit (or its branch ``branch``) deleted inside the ``with`` block and restored on exit.

        A lesioned unit outputs its shortcut; one without shortcut becomes the identity, or raises
        :class:`~resnets.errors.LesionError` where its input and output shapes differ.
        """
        with self.unit.lesioned(branch, name=self.name):
            yield self

    @contextmanager
    def scaled(self, factor: float) -> Iterator[BlockInfo]:
        """The branch multiplied by ``factor`` inside the ``with`` block; the previous scale comes back on exit."""
        with self.unit.scaled(factor):
            yield self

    @contextmanager
    def tapped(self, tap: Tap) -> Iterator[Tap]:
        """``tap(branch, shortcut)`` called with the live tensors on every forward pass inside the block.

        Unlike :meth:`capture`, the tensors are not copied: instruments that backpropagate through a unit's
        branch or shortcut (the path gradients of Veit et al.) need them attached to the graph.
        """
        with self.unit.tapped(tap):
            yield tap

    @contextmanager
    def capture(self) -> Iterator[UnitCapture]:
        """An object whose ``branch`` and ``shortcut`` hold F(x) and the shortcut of the last forward pass."""
        with self.unit.capture() as capture:
            yield capture


@contextmanager
def capture_units(blocks: Iterable[BlockInfo]) -> Iterator[dict[int, UnitCapture]]:
    """Captures of many units at once, keyed by ``BlockInfo.index``, so one forward pass reads them all."""
    with ExitStack() as stack:
        yield {info.index: stack.enter_context(info.capture()) for info in blocks}


class SkipNetwork(nn.Module):
    """Base class of every model in the registry.

    Subclasses set ``in_channels``, ``num_classes``, ``num_features`` and ``input_kind``, and implement
    ``forward_features`` and ``_residual_block_modules``; ``forward_head`` and ``reset_classifier`` work on
    the Linear named ``classifier_name`` unless a family pools differently.
    """

    input_kind: str = "image"
    classifier_name: str = "fc"  # the attribute holding the last Linear (torchvision's name for the family)
    in_channels: int
    num_classes: int
    num_features: int
    grad_checkpointing: bool = False  # see set_grad_checkpointing
    min_input_size: int = 1  # smallest image height and width the trunk accepts (fixed-size pools need more)
    #: Pixels an unpadded first conv trims from each image side: a feature map's side is
    #: (input side - border) // its feature_info reduction (0 for models whose first layer keeps the size).
    border: int = 0
    #: One dict per feature point in forward order: num_chs, reduction, module (see resnets.models.features).
    feature_info: list[dict[str, Any]]
    #: The module that block stacks apply to their last block's output, which norm=True applies to every
    #: intermediate (timm's ViT); None for convolutional models, whose last stage alone has the final norm's width.
    final_norm_name: str | None = None

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse config fields that this model class cannot use (ValueError, as a config's own checks).

        Most configs check themselves in ``__post_init__``; a config shared by several model classes (the
        Transformers') cannot tell which one it is for, so those classes override this.
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool of feature maps (vectors pass as they are), then the classifier.

        The branch is on the model's input kind, not on ``features.dim()``: torch.fx cannot trace a branch on
        a tensor's rank, and the kind says the same.
        """
        x = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1) if self.input_kind == "image" else features
        return x if pre_logits else getattr(self, self.classifier_name)(x)  # (B, num_classes)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str | None = None,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """(final features, [feature at each chosen index]) in timm's contract, or the list alone.

        ``indices``: None for every entry of ``feature_info``, n for the last n, or a sequence of indices
        (negative from the end); the list comes in forward order. ``norm``: apply the trunk's final norm where
        it fits (every block of a block stack; a convolutional model's last stage, which then equals the final
        features). ``stop_early``: end the pass at the last index wanted; the "final features" returned are
        then that feature. ``output_fmt``: NCHW for images (a ViT also gives NLC, its patch tokens without
        the class token), NLC for sequences, NC for vectors; None is the first of these.
        """
        return forward_intermediates(self, x, indices, norm, stop_early, output_fmt, intermediates_only)

    @property
    def intermediate_formats(self) -> tuple[str, ...]:
        """The values ``forward_intermediates`` accepts for ``output_fmt``; the first is the default."""
        return INTERMEDIATE_FORMATS[self.input_kind]

    def format_intermediate(self, feature: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """One intermediate in ``output_fmt`` (one of ``intermediate_formats``); hooks give the native layout."""
        return feature

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` (0: features only) on the same trunk."""
        self.num_classes = num_classes
        setattr(self, self.classifier_name, make_classifier(self.num_features, num_classes))

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        """(qualified name, stage, module) of each residual unit, in forward order."""
        raise NotImplementedError

    def residual_blocks(self) -> list[BlockInfo]:
        """The ordered residual units with their stage; plain twins list their (shortcut-free) units too."""
        return [BlockInfo(name, stage, i, m) for i, (name, stage, m) in enumerate(self._residual_block_modules())]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual unit in backward instead of storing its activations (timm's interface).

        Chen et al. 2016 ("Training Deep Nets with Sublinear Memory Cost"): training then keeps about one
        tensor per unit, its input, for roughly one more forward pass of compute. Losses, gradients and BN
        running statistics stay the same; units that instruments read are not checkpointed.
        """
        for info in self.residual_blocks():
            info.unit.grad_checkpointing = enable
        self.grad_checkpointing = enable

    def expected_input_shape(self) -> str:
        return _SHAPES[self.input_kind].format(c=self.in_channels)

    def check_input(self, x: torch.Tensor) -> None:
        """Fail early, naming the expected shape, instead of deep inside a conv with a cryptic message.

        Skipped while tracing (see :func:`is_tracing`), so that torch.fx and torchvision's
        ``create_feature_extractor`` can trace every model; eager calls keep the one-line error.
        """
        if is_tracing():
            return
        rank = INPUT_RANKS[self.input_kind]
        if x.dim() != rank or x.shape[-1 if self.input_kind != "image" else 1] != self.in_channels:
            raise InputShapeError(
                f"{type(self).__name__} expects input of shape {self.expected_input_shape()}, "
                f"got {tuple(x.shape)}; build the model with in_channels={x.shape[1] if x.dim() > 1 else '?'} "
                f"or convert the data"
            )
        if self.input_kind == "image" and min(x.shape[-2:]) < self.min_input_size:
            raise InputShapeError(
                f"{type(self).__name__} needs images of at least {self.min_input_size}x{self.min_input_size} "
                f"pixels (its poolings shrink smaller ones to nothing), got {x.shape[-2]}x{x.shape[-1]}; "
                "resize the images or choose a model made for small inputs"
            )


def make_classifier(num_features: int, num_classes: int) -> nn.Module:
    """A linear classifier, or the identity when ``num_classes`` is 0 (features only, as in timm)."""
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
