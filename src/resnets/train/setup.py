"""From a config to a model that fits the data: layout, channel count, class count, initial weights.

How samples reach each kind of model is decided in one place, ``resnets.data.layout``.
"""

from __future__ import annotations

from pathlib import Path

from resnets.data.layout import layout_for
from resnets.errors import CheckpointError, ConfigError, ResnetsError
from resnets.io.pretrained import load_pretrained
from resnets.io.weight_files import LoadedFile, load_weights, read_weight_file
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
    pretrained: bool = False,
) -> tuple[SkipNetwork, LoadedFile | None]:
    """The model to train, and the weight file it starts from (None: fresh weights), read through the loader that
    eval and predict use.

    ``weights`` names a file; ``reset_head`` keeps the file's trunk and trains a fresh classifier for this data's
    classes (fine-tuning). ``pretrained`` takes torchvision's or timm's cached ImageNet weights instead, with a
    fresh classifier where the data's classes are not ImageNet's.
    """
    if weights and pretrained:
        raise ConfigError("--weights FILE and --pretrained both name starting weights; give one of them")
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **options)
    if pretrained:
        try:
            return model, load_pretrained(model, model_name)
        except CheckpointError as error:
            raise CheckpointError(f"--pretrained: {error}") from None
    if not weights:
        return model, None
    state = read_weight_file(weights)  # its errors name the file already
    try:
        report = load_weights(model, state, reset_head=reset_head)
    except CheckpointError as error:
        raise CheckpointError(f"weights file {weights!r}: {error}") from None
    return model, LoadedFile(Path(weights), "--weights", report)
