"""The run record: what a run directory means, written once by ``train`` and read by every other command.

``config.json`` is this record. It says which model was built with which options, which data it saw and how
(the data set, its class names, the split settings, the normalisation, the layout the model reads), with which
precision and evaluation batch it was measured, and which checkpoint the other commands use by default. Resume,
``eval``, ``predict``, ``export`` and the instruments read it through :func:`read_record` (``open_run`` builds
on it), so no command re-derives any of it.

Which checkpoint: ``best`` exists only in runs with a validation split and is chosen on that split; a run
without one has no "best" (choosing on the test split would make the test error a biased estimate), so the
commands use ``last``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.device import Precision
from resnets.errors import ConfigError, DataError
from resnets.io.guard import RECORD_FILE
from resnets.io.schema import (
    FLAG,
    FLOAT32_MAX,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_FEATURES,
    MAX_PIXELS,
    MAX_SAMPLE_VALUES,
    MAX_SIDE,
    NATURAL,
    NUMBER,
    Rule,
    SchemaError,
    between,
    check_object,
    each,
    mapping,
    one_of,
    optional,
    parse_json,
    read_json,
    text,
)
from resnets.tta import TestTimeAugmentation

FORMAT = "resnets-run-1"
EVAL_BATCH = 512  # samples per evaluation batch: no gradients, so larger batches are cheaper per sample
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_EVAL_BATCH = 65_536
_NAME = text(1000)  # a class name, a model name: no file needs longer ones


@dataclass(frozen=True)
class DataRecord:
    """The data a run trained on, and how its samples reach the model."""

    spec: str  # the name or path given to load_data
    name: str  # what load_data called it
    kind: str  # image | vector
    classes: list[str]
    mean: list[float]  # training statistics, per channel (images, in [0, 1] units) or per feature
    std: list[float]
    sample_shape: list[int]  # one sample without the batch: (C, H, W) or (D,)
    layout: str  # what the model reads: image (B, C, H, W) | vector (B, D) | sequence (B, H, C*W)
    flip: bool = False  # horizontal flips keep the label
    data_dir: str | None = None
    label_column: str | None = None  # a CSV file's label column, when given (load_data's default otherwise)
    val_size: int | None = None  # the seeded validation split, as load_data takes it
    val_fraction: float = 0.0
    image_size: int | None = None
    max_bad_files: int | None = None
    train_samples: int = 0
    val_samples: int = 0
    test_samples: int = 0
    skipped_files: int = 0

    def load_options(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``load_data`` that rebuild the same splits."""
        return {
            "val_fraction": self.val_fraction,
            "val_size": self.val_size,
            "seed": seed,
            "image_size": self.image_size,
            "max_bad_files": self.max_bad_files,
            "label_column": self.label_column,
        }


#: What each field of a record's ``data`` may hold (the cross-field checks are in :func:`_check_data`).
DATA_RULES: dict[str, Rule] = {
    "spec": text(),
    "name": text(),
    "kind": one_of(("image", "vector")),
    "classes": each(_NAME, at_most=MAX_CLASSES),
    "mean": each(NUMBER, at_most=MAX_FEATURES),
    # divided by: 0 gave infinite inputs and NaN predictions; the data layer gives a constant channel std 1
    "std": each(between(1e-12, FLOAT32_MAX), at_most=MAX_FEATURES),
    "sample_shape": each(between(1, MAX_FEATURES, integer=True), at_most=3),
    "layout": one_of(("image", "vector", "sequence")),
    "flip": FLAG,
    "data_dir": optional(text()),
    "label_column": optional(text()),
    "val_size": optional(NATURAL),
    "val_fraction": between(0, 1, open_high=True),
    "image_size": optional(between(1, MAX_SIDE, integer=True)),
    "max_bad_files": optional(NATURAL),
    "train_samples": NATURAL,
    "val_samples": NATURAL,
    "test_samples": NATURAL,
    "skipped_files": NATURAL,
}
#: What each top-level field of a run record may hold.
RECORD_RULES: dict[str, Rule] = {
    "format": one_of((FORMAT,)),
    "model": _NAME,
    "model_options": mapping(),
    "num_classes": between(1, MAX_CLASSES, integer=True),
    "in_channels": between(1, MAX_FEATURES, integer=True),
    "input_kind": one_of(("image", "vector", "sequence")),
    "data": optional(mapping()),
    "seed": between(0, 2**63, integer=True, open_high=True),
    "device": text(100),
    "amp": FLAG,
    "amp_dtype": one_of(tuple(_DTYPES)),
    "channels_last": FLAG,
    "eval_batch_size": between(1, MAX_EVAL_BATCH, integer=True),
    "selection": optional(one_of(("val",))),
    "recipe": mapping(),
    "train": mapping(),
}


@dataclass(frozen=True)
class RunRecord:
    """One trained run (or, with ``data`` None, a bare weight file that records no data)."""

    model: str
    model_options: dict[str, Any]
    num_classes: int
    in_channels: int
    input_kind: str  # image | vector | sequence
    data: DataRecord | None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # autocast in training and evaluation
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    eval_batch_size: int = EVAL_BATCH
    selection: str | None = None  # "val": best.safetensors is chosen on the validation split; None: no best
    recipe: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # the full TrainConfig, to resume from
    format: str = FORMAT

    @property
    def default_checkpoint(self) -> str:
        """The checkpoint the commands use unless told otherwise."""
        return "best" if self.selection == "val" else "last"

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes) if self.data else [str(i) for i in range(self.num_classes)]

    @property
    def tta(self) -> TestTimeAugmentation:
        """The test-time augmentation every evaluation of the run uses (its recipe's ``tta``; mirror images only
        where the data's labels survive a mirror)."""
        return TestTimeAugmentation(int(self.recipe.get("tta", 0)), mirror=bool(self.data and self.data.flip))

    def precision(self, device: torch.device | str) -> Precision:
        """The precision the run was measured with, on ``device``."""
        device = torch.device(device)
        return Precision(
            device=device,
            amp=self.amp,
            dtype=_DTYPES[self.amp_dtype],
            channels_last=self.channels_last and self.input_kind == "image",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = RECORD_FILE) -> RunRecord:
        """Rebuild from JSON, checked against :data:`RECORD_RULES` and :data:`DATA_RULES`: a missing, mistyped or
        out-of-bounds field, or fields that contradict each other, is one SchemaError line naming it."""
        required = tuple(f.name for f in dataclasses.fields(cls) if _required(f))
        check_object(raw, RECORD_RULES, source, required=required)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        if values["data"] is not None:
            data_fields = dataclasses.fields(DataRecord)
            data = check_object(
                values["data"],
                DATA_RULES,
                source,
                prefix="data.",
                required=tuple(f.name for f in data_fields if _required(f)),
            )
            values["data"] = DataRecord(**{f.name: data[f.name] for f in data_fields if f.name in data})
            _check_data(values, source)
        return cls(**values)


def _check_data(values: dict[str, Any], source: str) -> None:
    """The fields of a record that must agree: shapes with kinds, statistics with channels, classes with their count."""
    data: DataRecord = values["data"]
    shape = data.sample_shape
    if len(shape) != (3 if data.kind == "image" else 1):
        expected = "[channels, height, width]" if data.kind == "image" else "[features]"
        raise SchemaError("data.sample_shape", shape, f"{expected} for {data.kind} data", source)
    if data.kind == "image":
        channels, height, width = shape
        if channels > MAX_CHANNELS or height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
            raise SchemaError(
                "data.sample_shape",
                shape,
                f"at most {MAX_CHANNELS:,} channels and {MAX_SIDE:,} x {MAX_SIDE:,} pixels",
                source,
            )
    for key in ("mean", "std"):
        if len(getattr(data, key)) != shape[0]:
            raise SchemaError(
                f"data.{key}", getattr(data, key), f"{shape[0]} values, one per channel or feature", source
            )
    if len(data.classes) != values["num_classes"]:
        raise SchemaError(
            "data.classes", data.classes, f"a list of num_classes ({values['num_classes']}) names", source
        )
    if len(set(data.classes)) != len(data.classes):
        raise SchemaError("data.classes", data.classes, "distinct names (one per class)", source)
    if data.layout != values["input_kind"]:  # what the model reads is how the loader lays samples out
        raise SchemaError(
            "data.layout", data.layout, f"{values['input_kind']!r} for a {values['input_kind']} model", source
        )
    from resnets.data.layout import layout_for

    try:
        _, channels = layout_for(values["input_kind"], data.kind, shape)
    except DataError:
        raise SchemaError("data.kind", data.kind, f"image data for a {values['input_kind']} model", source) from None
    if channels != values["in_channels"]:
        raise SchemaError(
            "in_channels", values["in_channels"], f"{channels}, as data.sample_shape {shape} gives", source
        )
    if math.prod(shape) > MAX_SAMPLE_VALUES:
        raise SchemaError("data.sample_shape", shape, f"a sample of at most {MAX_SAMPLE_VALUES:,} values", source)
    scale = 255.0 if data.kind == "image" else 1.0  # the loader divides pixels by 255 * std, then shifts by mean
    with np.errstate(all="ignore"):
        std = np.asarray(data.std, dtype=np.float32) * np.float32(scale)
        shift = -np.asarray(data.mean, dtype=np.float32) / np.asarray(data.std, dtype=np.float32)
        finite = np.isfinite(1 / std).all() and np.isfinite(shift).all()
    if not finite:
        raise SchemaError("data.mean", data.mean, "statistics whose mean / std is a finite float32", source)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def read_record(run_dir: str | Path) -> RunRecord:
    """The record of a run directory, with an error that says what is wrong."""
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        raise ConfigError(
            f"{str(run_dir)!r} is not a run directory: it has no {RECORD_FILE}; expected a directory written by "
            "`resnets train`, or a weight file"
        )
    return RunRecord.from_dict(read_json(path, "run record"), str(path))


def record_from_text(text: str, where: str) -> RunRecord:
    """A run record carried as JSON text inside another file (an export's metadata); ``where`` names that place."""
    return RunRecord.from_dict(parse_json(text, f"the run record in {where}"), where)
