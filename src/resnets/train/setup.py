"""From a config to a model that fits the data: layout, channel count, class count, initial weights.

How samples reach each kind of model is decided in one place, ``resnets.data.layout``.
"""

from __future__ import annotations

from resnets.data.layout import layout_for
from resnets.errors import CheckpointError, ResnetsError
from resnets.io.weight_files import load_weights, read_weight_file
from resnets.models import SkipNetwork, create_model, get_model_entry


def input_layout(model_name: str, data_kind: str, sample_shape: tuple[int, ...]) -> tuple[str, int]:
    """(loader layout, in_channels) for feeding data of ``sample_shape`` to the model ``model_name``."""
    return layout_for(get_model_entry(model_name).input_kind, data_kind, sample_shape, model_name)


def check_channels(model_name: str, given: int | None, derived: int, data_name: str, shape: tuple[int, ...]) -> None:
    if given is not None and given != derived:
        raise ResnetsError(
            f"--in-channels {given} does not match the data: {data_name} samples have shape {tuple(shape)}, which "
            f"gives {model_name!r} {derived} input channels; drop --in-channels or convert the data"
        )


def build_model(
    model_name: str,
    options: dict,
    *,
    num_classes: int,
    in_channels: int,
    weights: str | None = None,
    reset_head: bool = False,
) -> SkipNetwork:
    """The model to train, started from ``weights`` when given, through the loader that eval and predict use.

    ``reset_head`` keeps the file's trunk and trains a fresh classifier for this data's classes (fine-tuning).
    """
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **options)
    if weights:
        state = read_weight_file(weights)  # its errors name the file already
        try:
            load_weights(model, state, reset_head=reset_head)
        except CheckpointError as error:
            raise CheckpointError(f"weights file {weights!r}: {error}") from None
    return model
