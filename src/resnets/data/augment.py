"""The augmentation of He et al. (2015), section 4.2, applied to a whole batch at once.

"4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image or its
horizontal flip." The batch is padded once with zeros, then every sample's crop (and mirror) is gathered by
advanced indexing, so a batch costs a few tensor ops instead of B Python-level transforms.

It runs on raw uint8 pixels, before normalisation, so the padding is black (0), as in the paper's pipeline.
Random parameters are drawn on the CPU from the caller's generator and then moved to the batch's device, so
the same seed gives the same batch on CPU and GPU.

Flips are off for digits (MNIST: a mirrored 2 is not a 2), on for CIFAR and image folders, and on for
Fashion-MNIST, whose garments, bags and shoes keep their class when mirrored.

Two choices of the speedruns (Jordan 2024, airbench), both off by default: ``pad_mode="reflect"`` pads by
mirroring the border pixels instead of with black, and alternating flips mirror each image on every other epoch
(its orientation in epoch 0 drawn once per sample, then swapped each epoch), so that every pair of epochs shows
each image both ways where independent coin flips repeat an orientation half of the time. The loader draws the
per-sample orientations and passes the batch's ``mirror``.

Random erasing (Zhong et al. 2017), when asked for, then replaces one box per image, with probability
``erase``, by noise: area 2% to 1/3 of the image, aspect ratio 0.3 to 3.3, up to 10 tries per image for a box
that fits (as torchvision's ``RandomErasing``). Its numbers are drawn after the crop's and flip's, and only when
it is on, so a batch without it is exactly the batch it was before erasing existed. The noise is uniform over
the raw pixel range (0..255 for integer images, [0, 1) for float ones) rather than torchvision's per-pixel
normal noise on normalised data, because this runs before normalisation, on raw pixels: uniform pixels are
values real images take, and once normalised (per-channel std about 0.25) their spread is close to N(0, 1)'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ERASE_SCALE = (0.02, 1 / 3)  # fraction of the image a random-erasing box covers (Zhong et al. 2017)
ERASE_RATIO = (0.3, 3.3)  # its height / width
ERASE_TRIES = 10  # boxes drawn per image; the first that fits is used (none fits: the image is kept)
PAD_MODES = ("zeros", "reflect")


@dataclass(frozen=True)
class BatchAugment:
    """Random pad-and-crop and horizontal flip of a (B, C, H, W) batch, then optional random erasing."""

    pad: int = 4  # pixels of padding on each side; 0 disables the random crop
    flip: bool = True  # mirror samples: each with probability 1/2, or as ``mirror`` says (alternating flips)
    erase: float = 0.0  # probability of replacing one random box of each image by noise; 0 = off
    pad_mode: str = "zeros"  # zeros (He et al. 2015: black borders) | reflect (mirrored border pixels)
    alternating_flip: bool = False  # the loader passes each batch's ``mirror``: per-sample, swapped every epoch

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {list(PAD_MODES)}, got {self.pad_mode!r}")

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, mirror: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Augmented copy of ``images`` (B, C, H, W), any dtype; a pure function of (images, generator state,
        ``mirror``). ``mirror`` (B,) bool replaces the coin flips (alternating flips); the coins are drawn anyway,
        so the random stream does not depend on it."""
        batch, _, height, width = images.shape
        # Always draw both, in this order, so the stream does not depend on which options are on.
        offsets = torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=generator)
        coins = torch.randint(0, 2, (batch,), generator=generator).bool()
        mirror = (coins if mirror is None else mirror.cpu().bool()) & self.flip
        device = images.device
        rows = offsets[:, :1] + torch.arange(height)  # (B, H) rows of the padded image
        cols = offsets[:, 1:] + torch.arange(width)  # (B, W)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)  # mirror the crop: column j <- W-1-j
        rows, cols = rows.to(device), cols.to(device)
        mode = "constant" if self.pad_mode == "zeros" else "reflect"
        padded = F.pad(images, (self.pad,) * 4, mode=mode) if self.pad else images  # (B, C, H+2p, W+2p)
        padded = padded.permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C) so one gather picks whole pixels
        sample = torch.arange(batch, device=device)[:, None, None]
        out = padded[sample, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()
        if self.erase > 0:  # drawn last, and only when on: runs without erasing keep their random stream
            out = self._erase(out, generator)
        return out

    def _erase(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``images`` (B, C, H, W) with one noise box in each image chosen with probability ``erase``."""
        batch, channels, height, width = images.shape
        chosen = torch.rand(batch, generator=generator) < self.erase
        area = torch.empty(batch, ERASE_TRIES).uniform_(*ERASE_SCALE, generator=generator) * (height * width)
        log_ratio = torch.empty(batch, ERASE_TRIES).uniform_(*map(math.log, ERASE_RATIO), generator=generator)
        h = torch.sqrt(area * log_ratio.exp()).round().long()  # (B, tries)
        w = torch.sqrt(area / log_ratio.exp()).round().long()
        # torchvision's test (h < H, w < W), plus the rounded box's area inside the scale range
        fits = (h < height) & (w < width) & (h * w >= ERASE_SCALE[0] * height * width)
        fits &= h * w <= ERASE_SCALE[1] * height * width
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
        chosen &= fits.any(1)
        h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # (B,)
        top = (torch.rand(batch, generator=generator) * (height - h + 1)).long().minimum(height - h)  # uniform
        left = (torch.rand(batch, generator=generator) * (width - w + 1)).long().minimum(width - w)
        rows, cols = torch.arange(height), torch.arange(width)
        inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
        inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
        box = chosen[:, None, None] & inside_rows[:, :, None] & inside_cols[:, None, :]  # (B, H, W)
        count = channels * int(box.sum())  # noise only for the erased pixels, in (sample, channel, row, column) order
        if images.is_floating_point():
            noise = torch.rand(count, generator=generator).to(images.dtype)
        else:
            noise = torch.randint(0, 256, (count,), generator=generator).to(images.dtype)
        mask = box.to(images.device)[:, None].expand(batch, channels, height, width)
        return images.masked_scatter(mask, noise.to(images.device))
