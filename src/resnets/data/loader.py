"""Batches from an in-memory dataset, as a pure function of (seed, epoch, batch index).

The epoch's order comes from a generator seeded by (seed, epoch) and batch i's augmentation from one seeded by
(seed, epoch, i); nothing carries over from batch to batch. A run resumed at batch ``start`` of an epoch
therefore sees exactly the batches an uninterrupted run would have seen, which bit-exact resume relies on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from resnets.data.augment import BatchAugment
from resnets.data.dataset import ArrayDataset
from resnets.errors import ConfigError
from resnets.io.resources import check_batch

LAYOUTS = ("image", "vector", "sequence")
FLIP_STREAM = 0xF11B  # seeds the per-sample orientations of alternating flips, apart from every (seed, epoch)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, the same in every process and Python version (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


class BatchLoader:
    """Shuffled, augmented, normalised batches: float32 inputs and int64 targets on ``device``.

    ``layout`` shapes what the model receives: "image" (B, C, H, W); "vector" (B, C*H*W), so an MLP trains on
    flattened images (vector datasets pass as they are); "sequence" (B, H, C*W), image rows as tokens.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        augment: BatchAugment | None = None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        drop_last: bool = False,
        layout: str = "image",
        channels_last: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.images = dataset.inputs.dim() == 4
        if not self.images and (layout != "vector" or augment is not None):
            raise ConfigError(
                f"vector data (inputs {tuple(dataset.inputs.shape)}) needs layout='vector' and no augmentation, "
                f"got layout={layout!r}, augment={augment}"
            )
        channels = dataset.inputs.shape[1]
        pad = augment.pad if augment is not None else 0
        shape = [channels, *(side + 2 * pad for side in dataset.inputs.shape[2:])]
        check_batch(
            min(batch_size, len(dataset)), shape, "a batch", "lower --batch-size, --image-size or --crop-padding"
        )
        if augment is not None and augment.pad_mode == "reflect" and pad >= min(dataset.inputs.shape[2:]):
            height, width = dataset.inputs.shape[2:]  # a mirror reaches one side's width at most (torch refuses more)
            raise ConfigError(
                f"--crop-padding {pad} with --pad-mode reflect mirrors more than the {height}x{width} images hold; "
                f"use a padding below {min(height, width)}, or --pad-mode zeros"
            )
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(
                f"mean and std need {channels} values (one per channel/feature), got {len(mean)}, {len(std)}"
            )
        self.device = torch.device(device)
        self.inputs = dataset.inputs.to(self.device)  # uint8 images stay small: CIFAR-10 is 150 MB
        self.targets = dataset.targets.to(self.device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.augment, self.drop_last, self.layout, self.channels_last = augment, drop_last, layout, channels_last
        # normalise as x * scale + shift, folding the /255 of uint8 images into scale
        view = (1, channels, 1, 1) if self.images else (1, channels)
        std_t = torch.tensor(std, dtype=torch.float32) * (255.0 if self.images else 1.0)
        mean_t = torch.tensor(mean, dtype=torch.float32) * (255.0 if self.images else 1.0)
        self.scale = (1.0 / std_t).view(view).to(self.device)
        self.shift = (-mean_t / std_t).view(view).to(self.device)
        # Alternating flips: each sample's orientation in even epochs, drawn once from the seed (odd ones swap it).
        self.first_mirror = None
        if augment is not None and augment.alternating_flip:
            self.first_mirror = torch.randint(0, 2, (len(self.targets),), generator=_generator(seed, FLIP_STREAM))

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.targets)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (on the CPU)."""
        n = len(self.targets)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=_generator(self.seed, epoch))

    def batch(self, epoch: int, index: int, order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch``: normalised float32 inputs in the chosen layout, int64 targets."""
        order = self.order(epoch) if order is None else order
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]  # on the CPU
        picked = chosen.to(self.device)
        x, y = self.inputs[picked], self.targets[picked]
        if self.augment is not None:  # the orientations come from the CPU indices: no wait for a GPU
            mirror = None if self.first_mirror is None else self.first_mirror[chosen].bool() ^ bool(epoch % 2)
            x = self.augment(x, _generator(self.seed, epoch, index), mirror)
        x = x.to(torch.float32) * self.scale + self.shift
        if self.layout == "vector":
            x = x.reshape(x.shape[0], -1)  # (B, C*H*W)
        elif self.layout == "sequence":
            b, c, h, w = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b, h, c * w)  # (B, H, C*W): one token per image row
        elif self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of ``epoch``; the same ones whether or not earlier ones were drawn."""
        if not 0 <= start <= len(self):
            raise ConfigError(f"start must be in [0, {len(self)}] for an epoch of {len(self)} batches, got {start}")
        order = self.order(epoch)
        for index in range(start, len(self)):
            yield self.batch(epoch, index, order)
