"""What the instruments of untrained nets share: batch-statistics BN, a real batch per seed, depths near a sweep's.

A net fresh from ``create_model`` has BN running statistics 0/1, so deep nets overflow in eval mode: these
instruments measure with :func:`batch_statistics` (BN on the batch, everything else in eval mode) and say so
(``BN_BATCH``). Batches are real training images with their labels where the study's data set is present.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError, DataError
from resnets.models import NoDepthSweep, SkipNetwork, create_at_depth, get_model_entry
from resnets.studies.contract import Context
from resnets.studies.plans import DEFAULT_DATA

BN_BATCH = "batch statistics in BN (train-mode BN), every other module in eval mode (no dropout or drop path)"


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Any:
    """BN on the batch's statistics (as in training), everything else in eval mode; the modes come back on exit.

    A fresh net's running statistics are 0/1, so eval-mode BN makes deep nets overflow; dropout and drop path
    stay off so that the measurement depends on the weights and the batch alone.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


@dataclass
class StudyData:
    """Where the batches of untrained nets come from: the study's data set, or random images where it is missing."""

    bundle: Any  # a DataBundle, or None for random inputs
    description: str

    @classmethod
    def load(cls, context: Context) -> StudyData:
        from resnets.data import load_data

        spec = context.data or DEFAULT_DATA
        try:
            bundle = load_data(spec, context.data_dir)
        except DataError:
            if context.data:  # asked for by name: a missing set is the user's error
                raise
            return cls(None, f"random normal images with random labels ({spec} not found)")
        return cls(bundle, f"{bundle.name} training images with their labels")

    def shapes(self, name: str) -> dict[str, int]:
        """``num_classes`` and ``in_channels`` that the model ``name`` needs for these batches."""
        entry = get_model_entry(name)
        if self.bundle is None:
            channels = entry.input_size[0] if entry.input_kind == "image" else entry.input_size[-1]
            return {"num_classes": entry.num_classes, "in_channels": channels}
        from resnets.data.layout import layout_for

        _, channels = layout_for(entry.input_kind, self.bundle.kind, self.bundle.sample_shape, name)
        return {"num_classes": self.bundle.num_classes, "in_channels": channels}

    def batch(self, model: SkipNetwork, samples: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples`` training images drawn by ``seed`` (a different batch per seed), normalised as in training."""
        generator = torch.Generator().manual_seed(seed)
        if self.bundle is None:
            shape = _input_shape(model)
            x = torch.randn((samples, *shape), generator=generator)
            y = torch.randint(0, model.num_classes, (samples,), generator=generator)
            return x.to(device), y.to(device)
        from resnets.data import BatchLoader
        from resnets.data.layout import layout_for

        layout, _ = layout_for(model.input_kind, self.bundle.kind, self.bundle.sample_shape)
        loader = BatchLoader(
            self.bundle.train,
            samples,
            shuffle=True,
            seed=seed,
            mean=self.bundle.mean,
            std=self.bundle.std,
            layout=layout,
            device=device,
        )
        return loader.batch(0, 0)


def _input_shape(model: SkipNetwork) -> tuple[int, ...]:
    if model.input_kind == "image":
        return (model.in_channels, 32, 32)
    if model.input_kind == "sequence":
        return (32, model.in_channels)
    return (model.in_channels,)


def build_near(name: str, depth: int, seed: int, **options: Any) -> tuple[SkipNetwork, int]:
    """``create_at_depth(name, d)`` for the depth d nearest ``depth`` that the family can have, and d.

    Families count depth differently (6n+2 for CIFAR ResNets, 3n+4 for convolutional Highway nets), so a
    sweep at 20, 56, 110 puts a Highway net at 19, 55, 109.
    """
    first_error: ConfigError | None = None
    for offset in (0, -1, 1, -2, 2, -3, 3):
        torch.manual_seed(seed)
        try:
            return create_at_depth(name, depth + offset, **options), depth + offset
        except NoDepthSweep:
            raise  # no nearby depth can help
        except ConfigError as error:
            first_error = first_error or error
    assert first_error is not None
    raise first_error
