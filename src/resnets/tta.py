"""Test-time augmentation: the logits of a few transformed views of each image, averaged with fixed weights.

Level 1 averages an image and its mirror image (where mirroring keeps the label: not for digits); level 2 also
shifts the image by one pixel up-left and down-right (reflect padding) and weighs the views 1/2 unshifted, 1/4
each shifted, as Jordan's airbench94 does ("tta_level=2": six views with mirrors). Each view is one more
forward pass, so a level-2 evaluation costs 6x (3x without mirrors) the multiply-adds of a plain one; runs count
it (:attr:`TestTimeAugmentation.views`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LEVELS = (0, 1, 2)


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views of each image an evaluation averages: ``level`` 0, 1 or 2; mirror images where ``mirror``."""

    __test__ = False  # not a pytest test class, whatever its name says

    level: int = 0
    mirror: bool = True  # False for data whose labels change when mirrored (digits)

    @property
    def views(self) -> int:
        """Forward passes per image."""
        shifts = 3 if self.level >= 2 else 1
        return shifts * (2 if self.level >= 1 and self.mirror else 1)

    def describe(self) -> str:
        return f"test-time augmentation level {self.level} ({self.views} views)"

    def __call__(self, logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The weighted mean of ``logits`` over the views of ``x`` (B, C, H, W)."""
        return augmented_logits(logits, x, self.level, self.mirror)


def augmented_logits(
    logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, level: int, mirror: bool
) -> torch.Tensor:
    """The weighted mean of ``logits`` over the views of ``x`` (B, C, H, W) at ``level``; level 0 is ``logits(x)``."""
    if level == 0 or x.dim() != 4:
        return logits(x)

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        if not mirror:
            return logits(images)
        return 0.5 * logits(images) + 0.5 * logits(images.flip(-1))

    if level == 1:
        return mirrored(x)
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :height, :width], padded[..., 2:, 2:]
    return 0.5 * mirrored(x) + 0.25 * mirrored(up_left) + 0.25 * mirrored(down_right)
