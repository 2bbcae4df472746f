"""From a config to a model that fits the data: layout, channel count, class count, initial weights.

The model's input kind decides how images reach it: image models take (B, C, H, W); vector models
(MLPs) take the flattened image, so in_channels = C*H*W; sequence models (transformers) read each image
row as a token, (B, H, C*W), so in_channels = C*W.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from resnets.errors import CheckpointError, ResnetsError
from resnets.models import SkipNetwork, create_model, get_model_entry


def input_layout(model_name: str, data_kind: str, sample_shape: tuple[int, ...]) -> tuple[str, int]:
    """(loader layout, in_channels) for feeding data of ``sample_shape`` to the model ``model_name``."""
    return layout_for(get_model_entry(model_name).input_kind, data_kind, sample_shape, model_name)


def layout_for(kind: str, data_kind: str, sample_shape: tuple[int, ...], model_name: str = "") -> tuple[str, int]:
    """(loader layout, in_channels) for a model taking ``kind`` input (image | vector | sequence)."""
    if kind == "vector":
        return "vector", math.prod(sample_shape)
    if data_kind != "image" or len(sample_shape) != 3:
        raise ResnetsError(
            f"model {model_name!r} takes {kind} input but the data holds {data_kind} samples of shape "
            f"{tuple(sample_shape)}; use a vector model (an MLP) for tabular data"
        )
    channels, _, width = sample_shape
    return ("image", channels) if kind == "image" else ("sequence", channels * width)


def check_channels(model_name: str, given: int | None, derived: int, data_name: str, shape: tuple[int, ...]) -> None:
    if given is not None and given != derived:
        raise ResnetsError(
            f"--in-channels {given} does not match the data: {data_name} samples have shape {tuple(shape)}, which "
            f"gives {model_name!r} {derived} input channels; drop --in-channels or convert the data"
        )


def build_model(
    model_name: str, options: dict, *, num_classes: int, in_channels: int, weights: str | None = None
) -> SkipNetwork:
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **options)
    if weights:
        load_initial_weights(model, weights)
    return model


def load_initial_weights(model: SkipNetwork, path: str) -> None:
    """Start from a weight file; shapes must match, and a channel mismatch is named as such."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"weights file {path!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        elif file.suffix in (".pt", ".pth"):
            state = torch.load(file, map_location="cpu", weights_only=True)  # never a pickle fallback
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        else:
            raise CheckpointError(f"weights file {path!r}: use .safetensors, .pt or .pth")
    except (SafetensorError, RuntimeError, OSError) as error:
        raise CheckpointError(f"weights file {path!r} cannot be read safely: {error}") from None
    own = model.state_dict()
    first = next(k for k, v in own.items() if v.dim() >= 2)  # the stem's weight: its dim 1 is the input channels
    if first in state and state[first].dim() == own[first].dim() and state[first].shape[1] != own[first].shape[1]:
        raise ResnetsError(
            f"weights file {path!r} was built for {state[first].shape[1]} input channels but the data gives "
            f"the model {own[first].shape[1]}; use weights trained on {own[first].shape[1]}-channel data"
        )
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state]
    if bad or missing:
        if bad:
            detail = f"shape mismatch at {bad[0]}: file {tuple(state[bad[0]].shape)}, model {tuple(own[bad[0]].shape)}"
        else:
            detail = f"missing {missing[0]}"
        raise CheckpointError(f"weights file {path!r} does not fit {type(model).__name__}: {detail}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
