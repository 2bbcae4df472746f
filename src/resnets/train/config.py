"""A run's full configuration: what to train on what, with which recipe, on which device.

:class:`TrainConfig` holds everything ``train`` needs; its recipe is a :class:`Recipe`. Overrides come as a
flat mapping in which recipe fields (``lr``, ``epochs``) and run fields (``model``, ``seed``) share one
namespace, from a YAML/TOML file or ``--set KEY=VALUE``; an unknown key is a ConfigError listing the
valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib
import yaml

from resnets.errors import ConfigError, closest
from resnets.io.schema import MAX_FEATURES, MAX_SIDE, SchemaError, between, read_text
from resnets.train.recipes import (
    COUNT,
    NATURAL,
    FieldError,
    Recipe,
    Rule,
    check_fields,
    each,
    get_recipe,
    optional,
    recipe_fields,
)

MAX_CONFIG_BYTES = 2**20  # a config file is a few hundred bytes; a larger one is not a config file

#: What each run field accepts; checked when a TrainConfig is made, so before any data loads or file is written.
RUN_RULES: dict[str, Rule] = {
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
    # more threads than the machine's CPUs never help, and torch hangs on absurd counts (set_num_threads(100000))
    "threads": optional(between(1, os.cpu_count() or 1, integer=True)),
    "val_size": optional(NATURAL),
    "val_fraction": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
        "a number in [0, 1)",
    ),
    "snapshot_every": NATURAL,
    "snapshot_steps": each(NATURAL),
    "image_size": optional(between(1, MAX_SIDE, integer=True)),  # and the resized images must fit (data layer)
    "max_bad_files": optional(NATURAL),
    "in_channels": optional(between(1, MAX_FEATURES, integer=True)),
    "log_every": optional(COUNT),
}


@dataclass
class TrainConfig:
    """One training run. ``None`` means "decide from the data or the machine" (recorded once decided)."""

    model: str = "resnet20"
    model_options: dict[str, Any] = field(default_factory=dict)  # fields of the model's config (create_model)
    data: str = "fashion-mnist"  # dataset name or path (see resnets.data.load_data)
    data_dir: str | None = None
    label_column: str | None = None  # a CSV file's label column (default: label, target or class, else the last)
    val_size: int | None = None  # images held out of train for validation (seeded)
    val_fraction: float = 0.0  # or a fraction of train, in [0, 1)
    image_size: int | None = None  # resize image folders to this side (pixels)
    max_bad_files: int | None = None  # corrupt images tolerated in an image folder
    in_channels: int | None = None  # must match the data when given
    weights: str | None = None  # initial weights (safetensors, or .pt/.pth read with weights_only=True)
    reset_head: bool = False  # with weights: drop the file's classifier and train a fresh one (fine-tuning)
    pretrained: bool = False  # start from torchvision's or timm's cached ImageNet weights (resnets.io.pretrained)
    snapshot_steps: tuple[int, ...] = ()  # also keep the weights after these optimiser steps (0: the initial ones)
    snapshot_every: int = 0  # also keep the weights every N epochs, and the initial ones (0: off)
    recipe: Recipe = field(default_factory=lambda: get_recipe("default"))
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool | None = None  # None: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere
    channels_last: bool | None = None  # None: on (image models; faster on CUDA and on CPUs alike)
    grad_checkpointing: bool = False  # recompute each unit in backward: far less activation memory, ~1/3 more compute
    compile: bool = False  # torch.compile (inductor) the training model; needs a C++ compiler on CPU
    threads: int | None = None  # torch intra-op CPU threads; None keeps torch's default (one per core)
    out: str | None = None  # run directory; default runs/<model>-<data>-<timestamp>
    quiet: bool = False
    # steps between the plain progress lines printed when stderr is not a terminal (a log file, a pipe);
    # None: about 20 lines per epoch and at least one every 50 steps. A terminal gets a tqdm bar instead.
    log_every: int | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.snapshot_steps, list):  # as a run record's JSON gives it back
            self.snapshot_steps = tuple(self.snapshot_steps)
        check_fields(self, RUN_RULES)
        if self.val_size is not None and self.val_fraction:
            raise FieldError("val_size", self.val_size, f"null when val_fraction is set ({self.val_fraction})")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"] = dataclasses.asdict(self.recipe)
        return data

    def format(self) -> str:
        """The configuration as YAML, in the form that ``--config`` reads back."""
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def valid_keys() -> list[str]:
    return sorted(set(run_fields()) | set(recipe_fields()) - {"name"})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) file into an override mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist; give a .yaml, .yml or .toml file")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {str(path)!r}: unknown extension {path.suffix!r}; use .yaml, .yml or .toml")
    text = read_text(path, "config file", at_most=MAX_CONFIG_BYTES)  # a regular file of UTF-8 text, or one line
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError, RecursionError) as error:
        reason = " ".join(str(error).split()) or "nested too deeply"  # YAML's message spans lines; the CLI prints one
        raise ConfigError(f"config file {str(path)!r} cannot be parsed: {reason}") from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        got = type(data).__name__ if not isinstance(data, dict) else "keys that are not text"
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values, got {got}")
    return data


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (``lr=0.05``, ``milestones=[100, 200]``, ``amp=false``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return key.strip(), raw


def apply_overrides(
    config: TrainConfig,
    overrides: dict[str, Any],
    source: str = "overrides",
    sources: dict[str, str] | None = None,
) -> TrainConfig:
    """A copy of ``config`` with ``overrides`` applied; ``recipe`` may name a base recipe or be a mapping.

    ``source`` says where the overrides came from in error messages; ``sources`` names another origin for some
    keys (the ``--config`` file under command-line flags), so a bad value is blamed on the place that gave it.
    """

    def where(key: str) -> str:
        return (sources or {}).get(key, source)

    overrides = dict(overrides)
    recipe = config.recipe
    base = overrides.pop("recipe", None)
    if isinstance(base, dict):
        base = dict(base)
        name = base.pop("name", None)
        overrides = {**base, **overrides}
        base = name
    if base is not None:
        recipe = get_recipe(str(base))
        if recipe.default_model is not None and "model" not in overrides:  # the recipe's model, unless one is named
            overrides["model"] = recipe.default_model
    unknown = sorted(set(overrides) - set(valid_keys()))
    if unknown:
        close = closest(unknown[0], valid_keys())
        known = f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(valid_keys())}"
        raise ConfigError(f"unknown key {unknown[0]!r} in {where(unknown[0])}; {known}")
    recipe_hints = typing.get_type_hints(Recipe)
    run_hints = typing.get_type_hints(TrainConfig)
    changes = {k: _coerce(k, v, recipe_hints.get(k) or run_hints[k], where(k)) for k, v in overrides.items()}
    try:
        recipe = dataclasses.replace(recipe, **{k: v for k, v in changes.items() if k in recipe_hints})
        return dataclasses.replace(config, recipe=recipe, **{k: v for k, v in changes.items() if k not in recipe_hints})
    except FieldError as error:
        origin = where(error.key)
        if origin.startswith("--") and origin != "--set":  # the flag the user typed, in its own words
            expected = error.expected.replace(", or null", ", or none")
            raise ConfigError(f"{origin} must be {expected}, got {error.value!r}") from None
        raise ConfigError(f"in {origin}: {error}") from None


#: Strings that mean "no value" for an optional field: YAML's null words (which ``--set`` and YAML files already
#: read as None when bare) and Python's None, which users type as often.
NULL_WORDS = ("null", "Null", "NULL", "~", "None", "none")


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against the field's type hint, converting the lossless cases (int -> float, list -> tuple).

    A string that Python's ``float()`` or ``int()`` reads is a number for a float or int field: YAML 1.1 reads
    ``1e-3`` as a string (it wants ``1.0e-3``), and ``--set`` and ``--config`` files both come through here.
    """
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if value is None or (type(None) in args and isinstance(value, str) and value.strip() in NULL_WORDS):
        if type(None) in args:
            return None
        raise ConfigError(f"{key} in {source} cannot be empty; expected {_name(hint)}")
    if origin in (typing.Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option, source)
            except ConfigError:
                continue
        raise ConfigError(f"{key} in {source} must be {_name(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(key, v, args[0], source) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} in {source} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    number = _number(value, hint)
    if number is not None:
        return number
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key} in {source} must be {_name(hint)}, got {value!r}")


def _number(value: Any, hint: Any) -> int | float | None:
    """``value`` as the int or float that ``hint`` asks for, or None when it is not one."""
    if hint not in (int, float) or isinstance(value, bool):
        return None
    try:
        if isinstance(value, str):
            return hint(value)
        if hint is float and isinstance(value, (int, float)):
            return float(value)
        if hint is int and isinstance(value, int):
            return value
        if hint is int and isinstance(value, float) and value.is_integer():
            return int(value)
    except (ValueError, OverflowError):
        return None
    return None


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def config_from_dict(data: dict[str, Any], source: str = "the run record") -> TrainConfig:
    """Rebuild a TrainConfig from a mapping of run fields with a ``recipe`` mapping (as ``to_dict`` wrote it).

    Every value is checked as the same key in a ``--config`` file is (types, then ranges), so an edited or damaged
    record is one ConfigError line naming ``source``, the field and its value.
    """
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict):
        raise SchemaError("train.recipe", data.get("recipe") if isinstance(data, dict) else data, "a mapping", source)
    recipe_hints, run_hints = typing.get_type_hints(Recipe), typing.get_type_hints(TrainConfig)
    unknown = [f"train.recipe.{k}" for k in data["recipe"] if k not in recipe_hints]
    unknown += [f"train.{k}" for k in data if k not in run_hints]
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]}; it was not written by this version of resnets")
    try:
        recipe = Recipe(**{k: _coerce(k, v, recipe_hints[k], source) for k, v in data["recipe"].items()})
        values = {k: _coerce(k, v, run_hints[k], source) for k, v in data.items() if k != "recipe"}
        return TrainConfig(recipe=recipe, **values)
    except FieldError as error:
        raise ConfigError(f"in {source}: {error}") from None
