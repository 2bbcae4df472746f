"""One explicit registry of named models: ``create_model(name, **options)`` and ``list_models(pattern)``.

A registered model is data: a model class, a frozen config dataclass and its defaults. Options passed to
``create_model`` replace fields of that config; a name that is not a field is an error listing the valid
ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any

from resnets.errors import ConfigError, UnknownNameError
from resnets.models.base import SkipNetwork


@dataclass(frozen=True)
class ModelEntry:
    """How to build one named model, and what it expects by default."""

    name: str
    cls: type[SkipNetwork]
    config: Any  # a frozen dataclass instance accepted by ``cls(config, num_classes=, in_channels=)``
    num_classes: int  # default number of classes (1000 for ImageNet layouts, 10 for CIFAR)
    input_size: tuple[int, ...]  # default input without the batch: (C, H, W), (D,) or (T, D)
    family: str
    description: str

    @property
    def input_kind(self) -> str:
        return self.cls.input_kind

    def options(self) -> dict[str, Any]:
        """The options ``create_model`` accepts for this model, with their defaults."""
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    cls: type[SkipNetwork],
    config: Any,
    *,
    num_classes: int,
    input_size: tuple[int, ...],
    family: str,
    description: str,
) -> ModelEntry:
    """Add a named model; a duplicate name is a programming error."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of {name!r} must be a dataclass instance, got {type(config).__name__}")
    entry = ModelEntry(name, cls, config, num_classes, tuple(input_size), family, description)
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``resnet*``, ``*wide*``), in registration order.

    A pattern without wildcards matches as a substring (``wide`` finds every Wide ResNet).
    """
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [name for name in _REGISTRY if fnmatch.fnmatch(name, pattern)]


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, _REGISTRY, hint="`resnets models` lists them") from None


def create_model(
    name: str, *, num_classes: int | None = None, in_channels: int | None = None, **options: Any
) -> SkipNetwork:
    """Build the model ``name``; ``options`` replace fields of its config (see ``ModelEntry.options``)."""
    entry = get_model_entry(name)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UnknownNameError(f"option for model {name!r}:", unknown[0], valid)
    try:
        config = dataclasses.replace(entry.config, **options)
        entry.cls.check_config(config)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad option for model {name!r}: {error}") from None
    default_channels = entry.input_size[0] if entry.input_kind == "image" else entry.input_size[-1]
    return entry.cls(
        config,
        num_classes=entry.num_classes if num_classes is None else num_classes,
        in_channels=default_channels if in_channels is None else in_channels,
    )
