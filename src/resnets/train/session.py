"""What one run trains on: the data bundle, its loaders and the model built to fit it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from resnets.models import SkipNetwork, get_model_entry
from resnets.train.config import TrainConfig
from resnets.train.device import Precision
from resnets.train.setup import build_model, check_channels, input_layout

EVAL_BATCH = 512  # images per evaluation batch: no gradients, so larger batches are cheaper per image


@dataclass
class Session:
    bundle: Any  # resnets.data.DataBundle
    model: SkipNetwork
    layout: str  # image | vector | sequence
    in_channels: int
    train_loader: Any  # resnets.data.BatchLoader
    test_loader: Any | None
    val_loader: Any | None

    @classmethod
    def build(cls, config: TrainConfig, bundle: Any, precision: Precision, dist: Any) -> Session:
        from resnets.data import BatchLoader, load_data  # the data layer loads only when a run starts
        from resnets.data.augment import BatchAugment

        if bundle is None:
            bundle = load_data(
                config.data, config.data_dir, val_fraction=config.val_fraction, val_size=config.val_size,
                seed=config.seed, image_size=config.image_size, max_bad_files=config.max_bad_files,
            )
        layout, in_channels = input_layout(config.model, bundle.kind, bundle.sample_shape)
        check_channels(config.model, config.in_channels, in_channels, bundle.name, bundle.sample_shape)
        torch.manual_seed(config.seed)  # the initial weights are a function of the seed
        model = build_model(config.model, config.model_options, num_classes=len(bundle.classes),
                            in_channels=in_channels, weights=config.weights)  # fmt: skip
        channels_last = precision.channels_last and layout == "image"
        model.to(precision.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        augmented = config.recipe.augment and layout == "image" and bundle.kind == "image"
        augment = BatchAugment(pad=config.recipe.crop_padding, flip=bundle.flip) if augmented else None
        common = dict(mean=bundle.mean, std=bundle.std, layout=layout, channels_last=channels_last,
                      device=precision.device)  # fmt: skip
        train_loader = BatchLoader(bundle.train, config.recipe.batch_size, shuffle=True, seed=config.seed,
                                   augment=augment, drop_last=True, **common)  # fmt: skip

        def eval_loader(split: Any) -> Any:
            if split is None or len(split) == 0:
                return None
            return BatchLoader(split, EVAL_BATCH, shuffle=False, seed=0, drop_last=False, **common)

        return cls(bundle, model, layout, in_channels, train_loader, eval_loader(bundle.test), eval_loader(bundle.val))

    def run_config(self, config: TrainConfig, device: torch.device, precision: Precision) -> dict[str, Any]:
        """config.json: the contract that eval/predict/export read, plus ``train`` to resume from."""
        b = self.bundle
        resolved = {**config.to_dict(), "device": str(device), "amp": precision.amp,
                    "channels_last": precision.channels_last, "in_channels": self.in_channels}  # fmt: skip
        return {
            "model": config.model,
            "model_options": dict(config.model_options),
            "num_classes": len(b.classes),
            "in_channels": self.in_channels,
            "input_kind": get_model_entry(config.model).input_kind,
            "data": {
                "spec": config.data,
                "data_dir": config.data_dir,
                "name": b.name,
                "kind": b.kind,
                "classes": list(b.classes),
                "mean": list(b.mean),
                "std": list(b.std),
                "sample_shape": list(b.sample_shape),
                "flip": bool(b.flip),
                "layout": self.layout,
                "val_size": config.val_size,
                "val_fraction": config.val_fraction,
                "image_size": config.image_size,
                "train_samples": len(b.train),
                "val_samples": len(b.val) if b.val is not None else 0,
                "test_samples": len(b.test) if b.test is not None else 0,
                "skipped_files": b.skipped_files,
            },
            "recipe": asdict(config.recipe),
            "seed": config.seed,
            "device": str(device),
            "amp": precision.amp,
            "channels_last": precision.channels_last,
            "train": resolved,
        }
