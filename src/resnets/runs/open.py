"""Open a trained run, or a weight file, as one object: its record, its model with weights, its data.

``open_run(path)`` is the one way every command reads a run: ``eval``, ``predict``, ``export`` and the
instruments get the model (weights verified against the checkpoint manifest, in eval mode, on the device, in
the run's memory format), the run's precision, and loaders for each split that feed samples exactly as
training measured them. Resume reads the same record (``read_record``) to continue training.

Sources: a run directory; a checkpoint file inside one (``RUN/checkpoints/last.safetensors``); a safetensors
file exported by ``resnets export``, whose metadata carries the record; or a bare weight file (safetensors,
weights-only .pt/.pth) with a model name, which records no data, so its loaders need ``data``. ONNX and
TorchScript exports hold a fixed graph, not weights: ``eval`` and ``predict`` open them (and everything
above) through :func:`resnets.runs.exported.open_source`, which gives the same ``Run`` with that graph as
its model; ``open_run`` refuses them, since export and the instruments need the model's modules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from resnets.device import Precision
from resnets.errors import CheckpointError, ConfigError, DataError
from resnets.inference import InferenceModel, with_fast_model
from resnets.io.model_files import exported_format
from resnets.io.schema import check_object, one_of, text
from resnets.io.weight_files import infer_sizes, load_weights, read_safetensors_metadata, read_weight_file
from resnets.metrics import EvalResult, evaluate
from resnets.models import SkipNetwork, create_model, get_model_entry
from resnets.runs.checkpoint import check_file, snapshot_steps
from resnets.runs.memory import check_model_memory, check_run_memory
from resnets.runs.record import EVAL_BATCH, RECORD_FILE, RunRecord, read_record, record_from_text
from resnets.tta import TestTimeAugmentation

#: What the metadata of a safetensors file exported by ``resnets export`` holds (values are strings).
EXPORT_METADATA_RULES = {"format": one_of(("resnets-checkpoint-1",)), "model": text(1000), "record": text(2**26)}

SPLITS = ("test", "val", "train")
CHECKPOINTS = ("best", "last")


def measurement_loader(
    dataset: Any,
    *,
    mean: Any,
    std: Any,
    layout: str,
    precision: Precision,
    batch_size: int = EVAL_BATCH,
) -> Any:
    """The loader a run's splits are measured with, in training and after it: unshuffled, unaugmented."""
    from resnets.data import BatchLoader

    return BatchLoader(
        dataset,
        batch_size,
        shuffle=False,
        seed=0,
        drop_last=False,
        mean=tuple(mean),
        std=tuple(std),
        layout=layout,
        channels_last=precision.channels_last and layout == "image",
        device=precision.device,
    )


@dataclass
class Run:
    """A model with its weights and what is known of how it was trained; see the module docstring."""

    record: RunRecord
    model: SkipNetwork  # always from open_run; from open_source, an exported graph where ``exported`` is set
    checkpoint: Path  # the weight file (or exported file) the model was loaded from
    path: Path | None  # the run directory; None for a file outside one
    device: torch.device
    _data: dict[tuple[str, str | None], Any] = field(default_factory=dict, repr=False)
    inference: list[str] = field(default_factory=list)  # what the last evaluate() ran with
    exported: str | None = None  # "onnx" or "torchscript" for an exported graph, run as it was saved
    amp: bool | None = None  # autocast when measuring: None as the run was trained, False fp32, True autocast
    tta: int | None = None  # test-time augmentation level when measuring: None as the run's recipe says

    @property
    def precision(self) -> Precision:
        """What the run is measured in: its record's precision, or fp32 / autocast where ``amp`` says."""
        recorded = self.record.precision(self.device)
        return recorded if self.amp is None else replace(recorded, amp=self.amp)

    @property
    def test_time(self) -> TestTimeAugmentation:
        """The views each image is measured on: the record's (its recipe's ``tta``), or the level ``tta`` says."""
        recorded = self.record.tta
        return recorded if self.tta is None else replace(recorded, level=self.tta)

    @property
    def classes(self) -> list[str]:
        return self.record.classes

    @property
    def snapshots(self) -> list[int]:
        """Steps whose weights the run kept (``open_run(path, checkpoint=f"step-{n}")`` opens one)."""
        return sorted(snapshot_steps(self.path / "checkpoints")) if self.path else []

    def data(self, spec: str | None = None, data_dir: str | None = None) -> Any:
        """The data set as the run saw it (same splits, same seed), or ``spec`` checked against the run."""
        from resnets.data import load_data

        recorded = self.record.data
        if spec is None and recorded is None:
            raise DataError(f"{str(self.checkpoint)!r} records no data set; name one with --data")
        if spec is None:
            spec, data_dir = recorded.spec, data_dir if data_dir is not None else recorded.data_dir
        key = (str(spec), data_dir)
        if key not in self._data:
            options = recorded.load_options(self.record.seed) if recorded else {}
            bundle = load_data(spec, data_dir, **options)
            self._check(bundle)
            self._data[key] = bundle
        return self._data[key]

    def _check(self, bundle: Any) -> None:
        """Fail with one clear line when the data cannot feed the model."""
        from resnets.data.layout import layout_for

        record = self.record
        if len(bundle.classes) != record.num_classes:
            raise DataError(
                f"{bundle.name} has {len(bundle.classes)} classes but the model has {record.num_classes}; evaluate "
                f"on the data the model was trained on, or load it with a matching --num-classes"
            )
        _, derived = layout_for(record.input_kind, bundle.kind, tuple(bundle.sample_shape), record.model)
        if derived != record.in_channels:
            what = {"image": "channels", "vector": "features", "sequence": "features per token"}[record.input_kind]
            hint = ""
            if record.data and len(record.data.sample_shape) == 3:
                hint = f", e.g. --image-size {record.data.sample_shape[-1]}" if record.input_kind != "image" else ""
            raise DataError(
                f"{bundle.name} samples of shape {tuple(bundle.sample_shape)} give the model {derived} input {what}, "
                f"but it was built for {record.in_channels}; use data like the training data{hint}"
            )
        if record.data:
            ours, theirs = list(record.data.classes), [str(c) for c in bundle.classes]
            if ours != theirs and sorted(ours) == sorted(theirs):
                raise DataError(
                    f"{bundle.name} has the run's classes in a different order ({', '.join(theirs[:5])}, ...) than "
                    f"the run ({', '.join(ours[:5])}, ...); the labels would not match"
                )

    def loader(self, split: str = "test", *, data: str | None = None, data_dir: str | None = None) -> Any:
        """Batches of ``split``, normalised with the run's training statistics and fed in its layout."""
        from resnets.data.layout import layout_for

        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        bundle = self.data(data, data_dir)
        dataset = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
        if dataset is None or len(dataset) == 0:
            extra = (
                "; a run's validation split exists only when it was trained with --val-size or --val-fraction"
                if split == "val"
                else ""
            )
            raise DataError(f"{bundle.name} has no {split} split{extra}")
        recorded = self.record.data
        mean, std = (recorded.mean, recorded.std) if recorded else (bundle.mean, bundle.std)
        layout = (
            recorded.layout if recorded else layout_for(self.record.input_kind, bundle.kind, bundle.sample_shape)[0]
        )
        return measurement_loader(
            dataset, mean=mean, std=std, layout=layout, precision=self.precision, batch_size=self.record.eval_batch_size
        )

    def evaluate(
        self,
        split: str = "test",
        *,
        data: str | None = None,
        data_dir: str | None = None,
        fast: bool = True,
        compile: bool | None = None,
    ) -> EvalResult:
        """Loss, top-1/top-5 error, per-class accuracy and confusion of ``split``, as training measures them.

        ``fast`` runs the inference path that training's evaluation runs (:mod:`resnets.inference`: folded
        BatchNorms, the run's layout and precision); ``compile`` as there (None: only for big jobs). What it
        applied is left in ``self.inference``.
        """
        loader = self.loader(split, data=data, data_dir=data_dir)
        check_run_memory(
            self.record, min(self.record.eval_batch_size, len(loader.targets)), training=False, what="evaluating"
        )
        classes = self.classes if self.record.data else [str(c) for c in self.data(data, data_dir).classes]
        model, batches, precision = self.model, loader.epoch_batches(0), self.precision
        if fast or self.exported:
            model, batches = self.inference_model(batches, compile=compile, images=len(loader.targets))
            self.inference, precision = list(model.applied), None
        else:
            self.inference = ["eager"]
        return evaluate(model, batches, self.record.num_classes, precision=precision, classes=classes)

    def inference_model(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, compile: bool | None = None, images: int = 0
    ) -> tuple[InferenceModel, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        """The model that ``evaluate`` and ``predict`` call on ``batches`` (from :meth:`loader`), and the batches.

        A model with weights gets the fast inference copy built on the first batch (:mod:`resnets.inference`);
        an exported graph is already fixed, so it runs as saved (in fp32: the record says so, see open_source).
        """
        if self.exported is None:
            return with_fast_model(
                self.model, batches, precision=self.precision, compile=compile, images=images, tta=self.test_time
            )
        if compile:
            raise ConfigError(f"--compile applies to models with weights, not to the {self.exported} file given")
        providers = getattr(self.model, "providers", None)
        how = f"onnxruntime ({', '.join(providers)})" if providers else f"{self.exported} graph as saved"
        return InferenceModel(self.model, self.precision, [how], None, self.test_time), iter(batches)


def open_run(
    source: str | Path,
    *,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    model: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    amp: bool | None = None,
) -> Run:
    """Open a run directory or weight file (see the module docstring) with the model ready on ``device``.

    ``checkpoint`` is ``best`` or ``last`` (default: the run's own choice, ``best`` only where a validation
    split chose it). ``model``, ``num_classes`` and ``in_channels`` are needed only for bare weight files, and
    contradict a run's record at the caller's peril: that is an error. ``amp`` measures in fp32 (False) or
    autocast (True) whatever the run trained in (None: as it trained); the instruments measure in fp32.
    """
    run = _open(source, checkpoint, device, model, num_classes, in_channels)
    run.amp = amp
    return run


def _open(
    source: str | Path,
    checkpoint: str | None,
    device: str | torch.device,
    model: str | None,
    num_classes: int | None,
    in_channels: int | None,
) -> Run:
    from resnets.device import resolve_device

    device = resolve_device(str(device))
    if checkpoint is not None and checkpoint not in CHECKPOINTS and not re.fullmatch(r"step-\d+", checkpoint):
        raise ConfigError(
            f"unknown checkpoint {checkpoint!r}; expected one of {', '.join(CHECKPOINTS)} or step-N (a snapshot)"
        )
    path = Path(source)
    if path.is_dir():
        return _open_directory(path, checkpoint, device, model, num_classes, in_channels)
    if not path.exists():
        raise CheckpointError(
            f"{str(path)!r} does not exist; expected a run directory (with {RECORD_FILE}) or a weight file "
            "(.safetensors, .pth, .pt)"
        )
    run_dir = path.parent.parent
    if path.suffix == ".safetensors" and path.parent.name == "checkpoints" and (run_dir / RECORD_FILE).is_file():
        return _open_directory(run_dir, checkpoint or path.stem, device, model, num_classes, in_channels)
    return _open_file(path, device, model, num_classes, in_channels)


def _open_directory(
    path: Path,
    which: str | None,
    device: torch.device,
    model: str | None,
    num_classes: int | None,
    in_channels: int | None,
) -> Run:
    record = read_record(path)
    if model and model != record.model:
        raise ConfigError(f"--model {model!r} contradicts the run directory, which trained {record.model!r}; drop it")
    for given, key in ((num_classes, "num_classes"), (in_channels, "in_channels")):
        if given is not None and given != getattr(record, key):
            raise ConfigError(
                f"--{key.replace('_', '-')} {given} contradicts the run, which has {key}={getattr(record, key)}; "
                "drop the option"
            )
    which = which or record.default_checkpoint
    if which.startswith("step-") and int(which[5:]) not in snapshot_steps(path / "checkpoints"):
        kept = ", ".join(f"step-{k}" for k in sorted(snapshot_steps(path / "checkpoints"))) or "none"
        raise CheckpointError(
            f"{str(path)!r} kept no snapshot {which} (snapshots: {kept}); train with --snapshot-every N"
        )
    if which == "best" and record.selection != "val":
        raise ConfigError(
            f"{str(path)!r} has no best checkpoint: it was trained without a validation split, and choosing on the "
            "test split would bias its test error; use --checkpoint last (the default), or train with --val-size"
        )
    weights = path / "checkpoints" / f"{which}.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"run directory {str(path)!r} has no checkpoints/{which}.safetensors; has training saved a checkpoint yet?"
        )
    check_file(weights.parent, weights.name)
    return _ready(record, weights, path, device)


def _open_file(
    path: Path, device: torch.device, model: str | None, num_classes: int | None, in_channels: int | None
) -> Run:
    exported = exported_format(path)
    if exported is not None:
        raise CheckpointError(
            f"{str(path)!r} is an exported {exported} model, a fixed graph without the model's modules; eval and "
            "predict run it, but this command needs the run directory or a safetensors export of it"
        )
    state = read_weight_file(path)
    meta = read_safetensors_metadata(path)
    record = None
    if "record" in meta:  # written by resnets export: its format must be one this version reads
        where = f"the metadata of {str(path)!r}"
        check_object(meta, EXPORT_METADATA_RULES, where, required=("format",))
        record = record_from_text(meta["record"], where)
    if record is not None and (model in (None, record.model)):
        if num_classes not in (None, record.num_classes) or in_channels not in (None, record.in_channels):
            record = replace(
                record,
                num_classes=num_classes or record.num_classes,
                in_channels=in_channels or record.in_channels,
                data=None,
            )
        return _ready(record, path, None, device, state)
    name = model or meta.get("model")
    if not name:
        raise CheckpointError(
            f"{str(path)!r} is a bare weight file that does not say which model it is; pass --model NAME "
            "(`resnets models` lists them)"
        )
    entry = get_model_entry(name)
    sizes = infer_sizes(name, state)
    num_classes = num_classes or sizes.get("num_classes") or entry.num_classes
    default_channels = entry.input_size[0] if entry.input_kind == "image" else entry.input_size[-1]
    in_channels = in_channels or sizes.get("in_channels") or default_channels
    record = RunRecord(
        model=name,
        model_options={},
        num_classes=num_classes,
        in_channels=in_channels,
        input_kind=entry.input_kind,
        data=None,
    )
    return _ready(record, path, None, device, state)


def _ready(
    record: RunRecord, weights: Path, run_dir: Path | None, device: torch.device, state: dict | None = None
) -> Run:
    """Build the recorded model, load its weights, and put it on ``device`` in the run's memory format."""
    check_model_memory(
        record.model,
        record.model_options,
        num_classes=record.num_classes,
        in_channels=record.in_channels,
        training=False,
        what="building the model",
    )
    net = create_model(
        record.model, num_classes=record.num_classes, in_channels=record.in_channels, **record.model_options
    )
    load_weights(net, read_weight_file(weights) if state is None else state)
    precision = record.precision(device)
    net.to(device, memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)
    return Run(record=record, model=net.eval(), checkpoint=weights, path=run_dir, device=device)
