"""What one run trains on: the data bundle, the model built to fit it, the run record, and the loaders.

The record (resnets.runs.record) is made here, once, from what the run actually resolved; the evaluation
loaders are made from it, through the same function that ``open_run`` uses after training, so a split is
measured the same way during and after the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resnets.device import Precision
from resnets.errors import ConfigError
from resnets.io.weight_files import LoadedFile
from resnets.models import SkipNetwork, get_model_entry
from resnets.runs.open import measurement_loader
from resnets.runs.record import EVAL_BATCH, DataRecord, RunRecord
from resnets.train.compiling import check_compile
from resnets.train.config import TrainConfig
from resnets.train.data_init import prepare_whitening
from resnets.train.setup import build_model, check_channels, input_layout


@dataclass
class Session:
    bundle: Any  # resnets.data.DataBundle
    model: SkipNetwork
    record: RunRecord
    train_loader: Any  # resnets.data.BatchLoader
    test_loader: Any | None
    val_loader: Any | None
    loaded: LoadedFile | None = None  # the weight file the model started from (None: fresh weights, or resumed)

    @classmethod
    def build(cls, config: TrainConfig, bundle: Any, precision: Precision, *, resume: bool = False) -> Session:
        """Load the data (unless given), build the model (from ``config.weights`` on a new run) and loaders."""
        from resnets.data import BatchLoader, load_data  # the data layer loads only when a run starts
        from resnets.data.augment import BatchAugment

        if config.compile:  # before the data loads and the run directory exists, not at the first step
            check_compile(precision.device)
        if bundle is None:
            bundle = load_data(
                config.data,
                config.data_dir,
                val_fraction=config.val_fraction,
                val_size=config.val_size,
                seed=config.seed,
                image_size=config.image_size,
                max_bad_files=config.max_bad_files,
                progress=not config.quiet,  # a long first decode of an image folder
                label_column=config.label_column,
            )
        layout, in_channels = input_layout(config.model, bundle.kind, bundle.sample_shape)
        check_channels(config.model, config.in_channels, in_channels, bundle.name, bundle.sample_shape)
        torch.manual_seed(config.seed)  # the initial weights are a function of the seed
        # A resumed run takes its weights from its checkpoint: the initial weight file is not read again.
        weights = None if resume else config.weights
        model, loaded = build_model(
            config.model,
            config.model_options,
            num_classes=len(bundle.classes),
            in_channels=in_channels,
            weights=weights,
            reset_head=config.reset_head,
            pretrained=config.pretrained and not resume,
        )
        if config.grad_checkpointing:
            model.set_grad_checkpointing(True)
        record = make_record(config, bundle, layout, in_channels, precision)
        measured = record.precision(precision.device)
        model.to(
            precision.device, memory_format=torch.channels_last if measured.channels_last else torch.preserve_format
        )
        augmented = config.recipe.augment and layout == "image" and bundle.kind == "image"
        if config.recipe.random_erasing and not augmented:  # it is part of the batch augmentation
            raise ConfigError(
                f"random_erasing={config.recipe.random_erasing:g} erases boxes of augmented images, but this run "
                f"has no batch augmentation ({bundle.kind} data, {layout} layout, augment "
                f"{str(config.recipe.augment).lower()}); set --random-erasing 0"
            )
        r = config.recipe
        augment = None
        if augmented:
            augment = BatchAugment(
                pad=r.crop_padding,
                flip=bundle.flip,
                erase=r.random_erasing,
                pad_mode=r.pad_mode,
                alternating_flip=r.alternating_flip,
            )
        train_loader = BatchLoader(
            bundle.train,
            config.recipe.batch_size,
            shuffle=True,
            seed=config.seed,
            augment=augment,
            drop_last=True,
            mean=bundle.mean,
            std=bundle.std,
            layout=layout,
            channels_last=measured.channels_last,
            device=precision.device,
        )

        # fitted on a new run from scratch; a resumed or fine-tuned run keeps its weights (frozen all the same)
        prepare_whitening(model, train_loader, r.whiten_images, config.seed, fit=not resume and not weights)

        def eval_loader(split: Any) -> Any:
            if split is None or len(split) == 0:
                return None
            return measurement_loader(
                split,
                mean=bundle.mean,
                std=bundle.std,
                layout=layout,
                precision=measured,
                batch_size=record.eval_batch_size,
            )

        return cls(bundle, model, record, train_loader, eval_loader(bundle.test), eval_loader(bundle.val), loaded)

    def macs_per_sample(self) -> int:
        """Multiply-adds of one forward pass on one sample as the loader feeds it, counted on a meta-device copy
        of the model: the model itself never runs, so its BN statistics and the random generators stay as they
        were (bit-exact resume depends on it)."""
        from resnets.data.layout import model_input_shape
        from resnets.models.profile import build_meta, count_macs

        r = self.record
        meta = build_meta(r.model, num_classes=r.num_classes, in_channels=r.in_channels, **r.model_options)
        return count_macs(meta, model_input_shape(r.data.layout, r.data.sample_shape))


def resolved_path(spec: str | None) -> str | None:
    """An existing path made absolute, so a run recorded with a relative --data resumes from anywhere;
    a data set's name (``fashion-mnist``) stays as it is."""
    if spec is None or not Path(spec).exists():
        return spec
    return str(Path(spec).resolve())


def make_record(config: TrainConfig, bundle: Any, layout: str, in_channels: int, precision: Precision) -> RunRecord:
    """The run record (config.json) of a run with this config, data and precision."""
    has_val = bundle.val is not None and len(bundle.val) > 0
    data = DataRecord(
        spec=resolved_path(str(config.data)),
        name=bundle.name,
        kind=bundle.kind,
        classes=[str(c) for c in bundle.classes],
        mean=list(bundle.mean),
        std=list(bundle.std),
        sample_shape=list(bundle.sample_shape),
        layout=layout,
        flip=bool(bundle.flip),
        data_dir=resolved_path(config.data_dir),
        label_column=config.label_column,
        val_size=config.val_size,
        val_fraction=config.val_fraction,
        image_size=config.image_size,
        max_bad_files=config.max_bad_files,
        train_samples=len(bundle.train),
        val_samples=len(bundle.val) if has_val else 0,
        test_samples=len(bundle.test) if bundle.test is not None else 0,
        skipped_files=bundle.skipped_files,
    )
    resolved = {
        **config.to_dict(),
        "data": resolved_path(str(config.data)),  # resumable from any working directory
        "data_dir": resolved_path(config.data_dir),
        "device": str(precision.device),
        "amp": precision.amp,
        "channels_last": precision.channels_last,
        "in_channels": in_channels,
    }
    return RunRecord(
        model=config.model,
        model_options=dict(config.model_options),
        num_classes=len(bundle.classes),
        in_channels=in_channels,
        input_kind=get_model_entry(config.model).input_kind,
        data=data,
        seed=config.seed,
        device=str(precision.device),
        amp=precision.amp,
        amp_dtype=str(precision.dtype).removeprefix("torch."),
        channels_last=precision.channels_last,
        eval_batch_size=EVAL_BATCH,
        selection="val" if has_val else None,
        recipe=asdict(config.recipe),
        train=resolved,
    )
