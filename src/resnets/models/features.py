"""Feature extraction in timm's sense: ``forward_intermediates`` and the ``features_only`` wrapper.

Every model declares ``feature_info``: one dict per feature point, in forward order, with ``num_chs`` (channels
or width), ``reduction`` (input side / feature side; 1 for vectors and sequences) and ``module`` (the qualified
name of the module whose output is that feature). What a feature point is:

- convolutional models (ResNets, DenseNets, convolutional highway, multi-residual and looks-linear nets):
  index 0 is the stem's output before any pooling, as in timm (ResNet-50: ``relu``, 64 x 112 x 112 at 224
  pixels), and index i >= 1 the output of stage i, i.e. of the container of the units that
  ``residual_blocks()`` lists with stage i (a dense block's concatenation, not its last layer's new maps);
- block stacks (Transformers, residual and highway MLPs): index i is the output of block i (a Transformer
  block, both sublayers; a^{i+1} of a residual MLP), with no stem entry, as in timm's ViT.

The features are read by forward hooks on those modules while ``forward_features`` runs, so one generic
method serves every family and computes exactly what ``forward`` computes; ``stop_early`` ends the pass once
the last wanted feature is read. A hooked skip-connection unit counts as observed and is not checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.layers.checkpointing import frozen_running_stats

if TYPE_CHECKING:
    from resnets.models.base import SkipNetwork

#: Which intermediates are chosen: None (all), n (the last n), or a sequence of indices (negative from the end).
Indices = int | Sequence[int] | None


class _StopForward(Exception):
    """Raised by the hook of the last wanted feature to end the forward pass there (``stop_early``)."""


def feature_take_indices(num_features: int, indices: Indices) -> list[int]:
    """The absolute indices chosen by ``indices`` (timm's rule), sorted and without repeats."""
    if indices is None:
        return list(range(num_features))
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ConfigError(
                f"indices={indices} asks for the last {indices} features; this model has 1 to {num_features}"
            )
        return list(range(num_features - indices, num_features))
    chosen = set()
    for index in indices:
        absolute = num_features + index if index < 0 else index
        if not 0 <= absolute < num_features:
            raise ConfigError(
                f"feature index {index} is out of range: this model has {num_features} feature points, "
                f"indices 0 to {num_features - 1} (or -{num_features} to -1)"
            )
        chosen.add(absolute)
    if not chosen:
        raise ConfigError("no feature index given; pass at least one, or None for all")
    return sorted(chosen)


def forward_intermediates(
    model: SkipNetwork,
    x: torch.Tensor,
    indices: Indices = None,
    norm: bool = False,
    stop_early: bool = False,
    output_fmt: str | None = None,
    intermediates_only: bool = False,
) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
    """See :meth:`SkipNetwork.forward_intermediates`."""
    info = model.feature_info
    formats = model.intermediate_formats
    output_fmt = formats[0] if output_fmt is None else output_fmt
    if output_fmt not in formats:
        raise ConfigError(
            f"{type(model).__name__} gives intermediates as {' or '.join(formats)}, not {output_fmt!r}; "
            f"pass output_fmt={formats[0]!r} or leave it out"
        )
    take = feature_take_indices(len(info), indices)
    last = len(info) - 1
    stop_at = take[-1] if stop_early and take[-1] < last else None
    model.check_input(x)
    modules = dict(model.named_modules())
    seen: dict[int, torch.Tensor] = {}

    def reader(index: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def read(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if index in seen:
                raise RuntimeError(f"feature module {info[index]['module']!r} ran twice in one forward pass")
            seen[index] = output
            if index == stop_at:
                raise _StopForward

        return read

    handles = [modules[info[index]["module"]].register_forward_hook(reader(index)) for index in take]
    try:
        final = model.forward_features(x)
    except _StopForward:
        final = seen[stop_at]  # timm: with stop_early the returned features are where the pass stopped
    finally:
        for handle in handles:
            handle.remove()
    intermediates = [seen[index] for index in take]
    if norm:
        intermediates = _normed(model, take, intermediates, final, last)
    intermediates = [model.format_intermediate(t, output_fmt) for t in intermediates]
    return intermediates if intermediates_only else (final, intermediates)


def _normed(
    model: SkipNetwork, take: list[int], intermediates: list[torch.Tensor], final: torch.Tensor, last: int
) -> list[torch.Tensor]:
    """The trunk's final norm applied where it fits (timm: every ViT block's output, a ResNetV2's last stage).

    A block stack names its final norm (``final_norm_name``) and every block has its width, so each output gets
    it; running statistics (a BatchNorm there) move only in the forward pass itself. A convolutional model's
    final norm fits only its last stage, and that normalised output is the final features themselves.
    """
    if model.final_norm_name is None:
        return [final if index == last else t for index, t in zip(take, intermediates)]
    final_norm = model.get_submodule(model.final_norm_name)
    with frozen_running_stats(final_norm):
        return [final_norm(t) for t in intermediates]


class FeatureListNet(nn.Module):
    """A model whose forward returns the list of its feature maps at ``out_indices`` (timm's ``features_only``).

    The wrapped model is ``model``; the pass stops after the last index wanted. ``feature_info`` lists the chosen
    entries of the model's own. Its state dict has the model's own keys (``conv1.weight``, not
    ``model.conv1.weight``), as timm's feature models have, so a torchvision or timm state dict loads as it is
    (with ``strict=False``, or through ``resnets.io.weight_files.load_weights``: the file's classifier has no place
    here). Keys saved with the ``model.`` prefix still load.
    """

    def __init__(self, model: SkipNetwork, out_indices: Indices = None) -> None:
        super().__init__()
        self.model = model
        self.out_indices = tuple(feature_take_indices(len(model.feature_info), out_indices))
        self.feature_info = [dict(model.feature_info[index]) for index in self.out_indices]
        self.register_state_dict_post_hook(_without_wrapper_prefix)
        self.register_load_state_dict_pre_hook(_with_wrapper_prefix)
        self.register_load_state_dict_post_hook(_report_without_wrapper_prefix)

    def channels(self) -> list[int]:
        """Channels (or width) of each returned feature map."""
        return [entry["num_chs"] for entry in self.feature_info]

    def reduction(self) -> list[int]:
        """Input side / feature side of each returned map (1 for vectors and sequences)."""
        return [entry["reduction"] for entry in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=list(self.out_indices), stop_early=True, intermediates_only=True
        )


#: The attribute FeatureListNet keeps the model under, which its state dict leaves out of every key.
_WRAPPED = "model."


def _rename(state: dict[str, Any], rename: Callable[[str], str]) -> None:
    """Rename every key of ``state`` in place, keeping the order (a parent's state dict is the same object)."""
    for key in list(state):
        state[rename(key)] = state.pop(key)


def _without_wrapper_prefix(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    inner = prefix + _WRAPPED
    _rename(state, lambda key: prefix + key[len(inner) :] if key.startswith(inner) else key)


def _with_wrapper_prefix(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    inner = prefix + _WRAPPED
    _rename(
        state, lambda key: inner + key[len(prefix) :] if key.startswith(prefix) and not key.startswith(inner) else key
    )
    module._loading_prefix = prefix  # for the report of this load (the post-hook is not given the prefix)


def _report_without_wrapper_prefix(module: nn.Module, incompatible: Any) -> None:
    """Missing and unexpected keys named as the caller's state dict names them."""
    prefix = getattr(module, "_loading_prefix", "")
    inner = prefix + _WRAPPED
    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        keys[:] = [prefix + key[len(inner) :] if key.startswith(inner) else key for key in keys]
