"""The augmentation of He et al. (2015), section 4.2, applied to a whole batch at once.

"4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image or its
horizontal flip." The batch is padded once with zeros, then every sample's crop (and mirror) is gathered by
advanced indexing, so a batch costs a few tensor ops instead of B Python-level transforms.

It runs on raw uint8 pixels, before normalisation, so the padding is black (0), as in the paper's pipeline.
Random parameters are drawn on the CPU from the caller's generator and then moved to the batch's device, so
the same seed gives the same batch on CPU and GPU.

Flips are off for digits (MNIST: a mirrored 2 is not a 2), on for CIFAR and image folders, and on for
Fashion-MNIST, whose garments, bags and shoes keep their class when mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchAugment:
    """Random pad-and-crop and horizontal flip of a (B, C, H, W) batch."""

    pad: int = 4  # pixels of zero padding on each side; 0 disables the random crop
    flip: bool = True  # mirror each sample with probability 1/2

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of ``images`` (B, C, H, W), any dtype; a pure function of (images, generator state)."""
        batch, _, height, width = images.shape
        # Always draw both, in this order, so the stream does not depend on which options are on.
        offsets = torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=generator)
        mirror = torch.randint(0, 2, (batch,), generator=generator).bool() & self.flip
        device = images.device
        rows = offsets[:, :1] + torch.arange(height)  # (B, H) rows of the padded image
        cols = offsets[:, 1:] + torch.arange(width)  # (B, W)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)  # mirror the crop: column j <- W-1-j
        rows, cols = rows.to(device), cols.to(device)
        padded = F.pad(images, (self.pad,) * 4) if self.pad else images  # (B, C, H+2p, W+2p), zeros
        padded = padded.permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C) so one gather picks whole pixels
        sample = torch.arange(batch, device=device)[:, None, None]
        out = padded[sample, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()
