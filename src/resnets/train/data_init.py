"""Initialisation from the training data: fit the model's patch-whitening conv before the first step.

The speedruns (Page 2018; Jordan 2024) set their first conv from the covariance of 2x2 patches of a few thousand
training images (see :mod:`resnets.layers.whitening`). The images are drawn by the run's seed, without
augmentation, and normalised exactly as the training loader feeds them, so a run and its rerun fit the same
filters. Resumed runs and runs started from a weight file keep the weights they have.
"""

from __future__ import annotations

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.layers.whitening import PatchWhitening

WHITENING_STREAM = 0x3417  # seeds the choice of images, apart from every (seed, epoch) of the loader


def whitening_layers(model: nn.Module) -> list[PatchWhitening]:
    return [m for m in model.modules() if isinstance(m, PatchWhitening)]


def prepare_whitening(model: nn.Module, loader, images: int, seed: int, *, fit: bool) -> None:
    """With ``images`` > 0, the patch-whitening conv's weights are frozen for the whole run, and (``fit``: a new
    run from scratch) first fitted on ``images`` training images of ``loader`` (a
    :class:`~resnets.data.BatchLoader`) drawn by ``seed``. A resumed run freezes them too, so that it trains
    exactly the parameters the uninterrupted run trains."""
    if images == 0:
        return
    layers = whitening_layers(model)
    if not layers:
        raise ConfigError(
            f"whiten_images={images} fits a patch-whitening first conv, and {type(model).__name__} has none; "
            "set --whiten-images 0, or train a model that has one (speedrun, speedrun_plain)"
        )
    if fit:
        from resnets.data.loader import derive_seed  # the loader's own seeding: the same draw on every machine

        n = len(loader.targets)
        generator = torch.Generator().manual_seed(derive_seed(seed, WHITENING_STREAM))
        order = torch.randperm(n, generator=generator)[: min(images, n)]
        x = loader.inputs[order.to(loader.device)].to(torch.float32) * loader.scale + loader.shift  # (N, C, H, W)
        for layer in layers:
            layer.fit(x)
    for layer in layers:
        layer.weight.requires_grad_(False)
