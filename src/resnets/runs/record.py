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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnets.device import Precision
from resnets.errors import ConfigError

FORMAT = "resnets-run-1"
RECORD_FILE = "config.json"
EVAL_BATCH = 512  # samples per evaluation batch: no gradients, so larger batches are cheaper per sample
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
        """Rebuild from JSON; a missing or mistyped field is a ConfigError naming it."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} holds a {type(raw).__name__}; expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and _required(f)]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}; expected a run record written by `resnets train`")
        data = values.get("data")
        if data is not None:
            data_known = {f.name for f in dataclasses.fields(DataRecord)}
            try:
                values["data"] = DataRecord(**{k: v for k, v in data.items() if k in data_known})
            except TypeError as error:
                raise ConfigError(f"{source}: the data record is incomplete ({error})") from None
        if values.get("amp_dtype", "bfloat16") not in _DTYPES:
            raise ConfigError(f"{source}: amp_dtype must be one of {', '.join(_DTYPES)}, got {values['amp_dtype']!r}")
        return cls(**values)


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
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {error}") from None
    return RunRecord.from_dict(raw, str(path))
