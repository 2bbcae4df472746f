"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): train on pairs of samples and their mixed labels.

Per batch, lambda ~ Beta(alpha, alpha) and a permutation pair each sample with another of the same batch.
Mixup blends the inputs, ``lam * x + (1 - lam) * x[perm]``; CutMix pastes a box of ``x[perm]`` covering about
``1 - lam`` of the image and then sets lambda to the exact kept fraction. With both on, each batch uses one of
them with probability 1/2 (timm's ``switch_prob``). The loss is the same mixture of two cross-entropies,
``lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])``, with the recipe's label smoothing.

The draws are a pure function of (seed, step, rank), so a resumed run mixes exactly as an uninterrupted one
without saving any state, and the ranks of a DDP run mix differently.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from resnets.data.loader import derive_seed
from resnets.errors import ConfigError
from resnets.train.recipes import Recipe

#: Keeps the mixing draws apart from the loader's (seed, epoch[, batch]) streams.
STREAM = 0x6D6978  # "mix"


def mixing_rng(seed: int, step: int, rank: int = 0) -> random.Random:
    """The generator of the batch of optimiser step ``step`` (0-based) on ``rank``."""
    return random.Random(derive_seed(seed, step, rank, STREAM))


@dataclass(frozen=True)
class Mixed:
    """A mixed batch: the inputs, both label sets, and the weight ``lam`` of the first."""

    inputs: torch.Tensor
    targets: torch.Tensor  # (B,) labels of the samples as drawn
    perm: torch.Tensor  # (B,) the partner of sample i is sample perm[i]
    lam: float  # share of ``targets`` in the mixture
    method: str  # "mixup" or "cutmix"

    @property
    def partners(self) -> torch.Tensor:
        return self.targets[self.perm]

    def loss(self, logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mixed cross-entropy: each label weighted by its share of the input."""
        first = F.cross_entropy(logits, self.targets, label_smoothing=label_smoothing)
        second = F.cross_entropy(logits, self.partners, label_smoothing=label_smoothing)
        return self.lam * first + (1.0 - self.lam) * second

    def dominant(self) -> torch.Tensor:
        """Each sample's larger share's label, against which the per-step training error is counted."""
        return self.targets if self.lam >= 0.5 else self.partners


@dataclass(frozen=True)
class BatchMixing:
    """Mixup and/or CutMix of whole batches; an alpha of 0 turns that one off."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, rng: random.Random) -> Mixed:
        """Mix ``inputs`` (B, ...) with a permutation of itself; CutMix needs images (B, C, H, W)."""
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = rng.betavariate(alpha, alpha)
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        perm = torch.randperm(len(targets), generator=generator).to(inputs.device)
        if not use_cutmix:
            return Mixed(lam * inputs + (1.0 - lam) * inputs[perm], targets, perm, lam, "mixup")
        if inputs.dim() != 4:
            raise ConfigError(f"cutmix_alpha needs image batches (B, C, H, W), got inputs {tuple(inputs.shape)}")
        height, width = inputs.shape[-2:]
        top, bottom, left, right = cut_box(height, width, lam, rng)
        mixed = inputs.clone()
        mixed[:, :, top:bottom, left:right] = inputs[perm, :, top:bottom, left:right]  # only the box is gathered
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)  # Yun et al.: the exact area
        return Mixed(mixed, targets, perm, kept, "cutmix")


def cut_box(height: int, width: int, lam: float, rng: random.Random) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box with sides ``sqrt(1 - lam)`` of the image's, centred anywhere and
    clipped to the image (so its area can be smaller), as Yun et al. and timm's ``rand_bbox``."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = rng.randrange(height), rng.randrange(width)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def make_mixing(recipe: Recipe, layout: str) -> BatchMixing | None:
    """The recipe's mixing, or None when both alphas are 0; CutMix on non-image inputs is refused here,
    before anything trains."""
    if recipe.mixup_alpha == 0 and recipe.cutmix_alpha == 0:
        return None
    if recipe.cutmix_alpha > 0 and layout != "image":
        raise ConfigError(
            f"cutmix_alpha={recipe.cutmix_alpha:g} pastes image boxes, but this run feeds the model {layout} "
            "inputs; set --cutmix-alpha 0 (--mixup-alpha works on any input)"
        )
    return BatchMixing(recipe.mixup_alpha, recipe.cutmix_alpha)
