"""How samples reach a model: the loader layout and the ``in_channels`` that a model needs for them.

Image models take (B, C, H, W); vector models (MLPs) take the flattened image, so in_channels = C*H*W; sequence
models (Transformers) read each image row as a token, (B, H, C*W), so in_channels = C*W. Training, evaluation
and prediction all ask this one function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from resnets.errors import DataError


def layout_for(input_kind: str, data_kind: str, sample_shape: Sequence[int], model_name: str = "") -> tuple[str, int]:
    """(loader layout, in_channels) for feeding samples of ``sample_shape`` to a model taking ``input_kind``."""
    if input_kind == "vector":
        return "vector", math.prod(sample_shape)
    if data_kind != "image" or len(sample_shape) != 3:
        named = f"model {model_name!r}" if model_name else "the model"
        raise DataError(
            f"{named} takes {input_kind} input but the data holds {data_kind} samples of shape "
            f"{tuple(sample_shape)}; use a vector model (an MLP) for tabular data"
        )
    channels, _, width = sample_shape
    return ("image", channels) if input_kind == "image" else ("sequence", channels * width)


def model_input_shape(layout: str, sample_shape: Sequence[int]) -> tuple[int, ...]:
    """One sample as the loader feeds it in ``layout`` (without the batch): what the model's compute is counted on."""
    if layout == "vector":
        return (math.prod(sample_shape),)
    if layout == "sequence":
        channels, height, width = sample_shape
        return (height, channels * width)
    return tuple(sample_shape)
