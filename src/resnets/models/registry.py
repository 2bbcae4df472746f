"""One explicit registry of named models: ``create_model(name, **options)`` and ``list_models(pattern)``.

A registered model is data: a model class, a frozen config dataclass and its defaults. Options passed to
``create_model`` replace fields of that config; a name that is not a field is an error listing the valid
ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnets.errors import ConfigError, UnknownNameError
from resnets.models.base import SkipNetwork
from resnets.models.features import FeatureListNet, Indices
from resnets.models.options import field_default


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
    _document_options()
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
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    features_only: bool = False,
    out_indices: Indices = None,
    prepare: Callable[[SkipNetwork], Any] | None = None,
    **options: Any,
) -> SkipNetwork | FeatureListNet:
    """Build the model ``name``; ``options`` replace fields of its config (see ``ModelEntry.options``).

    ``features_only=True`` returns a :class:`~resnets.models.features.FeatureListNet` without classifier, whose
    forward gives the feature maps at ``out_indices`` (indices into ``model.feature_info``; all by default).
    ``prepare`` is called with the network before any such wrapper: ``resnets.create_model`` loads cached
    ImageNet weights with it (``pretrained=True``, see :mod:`resnets.api`).
    """
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
    if features_only and num_classes is not None:
        raise ConfigError(f"num_classes={num_classes} does not apply with features_only=True: there is no classifier")
    if out_indices is not None and not features_only:
        raise ConfigError(f"out_indices={out_indices!r} applies only with features_only=True")
    model = entry.cls(
        config,
        num_classes=0 if features_only else entry.num_classes if num_classes is None else num_classes,
        in_channels=default_channels if in_channels is None else in_channels,
    )
    if prepare is not None:
        prepare(model)
    # timm's features_only: the list of feature maps at out_indices (all by default); see models/features.py.
    return FeatureListNet(model, out_indices) if features_only else model


# -- help(create_model): the options of each family, written from the registry so it never goes stale ----------

#: Functions whose ``help`` lists every family's options (``create_model``, and the package's own, see
#: :func:`document_options`), with each one's own docstring first.
_DOCUMENTED: dict[Callable[..., Any], str] = {}


def options_doc() -> str:
    """Per family and config class: each option's type and default, and the values its named models use."""
    groups: dict[tuple[str, type], list[ModelEntry]] = {}
    for entry in _REGISTRY.values():
        groups.setdefault((entry.family, type(entry.config)), []).append(entry)
    lines = [
        "Options by family (written from the registry): each option's type and its config class's default; where",
        "the family's named models set other values, they follow as \"models use\". One model's own values:",
        "``get_model_entry(name).options()``.",
    ]
    for (family, config_cls), entries in groups.items():
        names = ", ".join(e.name for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
        lines += ["", f"{family}: {config_cls.__name__} ({len(entries)} models: {names})"]
        for field in dataclasses.fields(config_cls):
            default = field_default(field)
            used = sorted({repr(getattr(e.config, field.name)) for e in entries})
            text = f"    {field.name}: {_type_name(field.type)} = {default!r}"
            if used != [repr(default)]:
                text += f"  (models use {', '.join(used[:4])}{', ...' if len(used) > 4 else ''})"
            lines.append(text)
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))


def document_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Have ``function``'s docstring (what ``help`` shows) end with the options of every registered model, now
    and after each registration; returns the function (a decorator)."""
    _DOCUMENTED[function] = inspect.cleandoc(function.__doc__ or "")
    _document_options()
    return function


def _document_options() -> None:
    """Rewrite the documented functions' ``__doc__`` with the options of every model registered so far."""
    options = options_doc()
    for function, doc in _DOCUMENTED.items():
        function.__doc__ = f"{doc}\n\n{options}"


document_options(create_model)
