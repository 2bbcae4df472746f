"""Patch whitening: a first convolution whose filters decorrelate the image's k x k patches.

The filters are the eigenvectors of the covariance of k x k patches drawn from the training images, each divided
by the square root of its eigenvalue (plus ``eps``), and their negatives, so 2 * C * k * k channels come out of
C (24 from RGB at k = 2). Patches then leave the layer with unit variance along every principal direction, so
the layers after it need not learn the decorrelation themselves. Page ("How to train your ResNet" 7) and
Jordan's airbench speedruns fit it once on 5,000 training images and freeze its weights; only the bias trains,
for the first few epochs.

The layer is a plain ``nn.Conv2d``: fitting writes its weight, and a frozen weight is one whose
``requires_grad`` is off. Until it is fitted it is an ordinary learned convolution.
"""

from __future__ import annotations

import torch
from torch import nn

WHITENING_EPS = 5e-4  # added to each eigenvalue: directions of tiny variance are not blown up (airbench's value)


class PatchWhitening(nn.Conv2d):
    """A ``kernel`` x ``kernel`` convolution with 2 * C * kernel^2 outputs and a bias, no padding."""

    def __init__(self, in_channels: int, kernel: int = 2) -> None:
        super().__init__(in_channels, 2 * in_channels * kernel * kernel, kernel, padding=0, bias=True)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, eps: float = WHITENING_EPS) -> None:
        """Set the filters from ``images`` (N, C, H, W), normalised as training feeds them, and freeze them."""
        patches = patch_rows(images.float(), self.kernel_size[0])  # (P, C*k*k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        order = eigenvalues.flip(0)
        filters = eigenvectors.T.flip(0) / torch.sqrt(order + eps)[:, None]  # (C*k*k, C*k*k), largest first
        filters = filters.reshape(-1, *self.weight.shape[1:])
        self.weight.copy_(torch.cat((filters, -filters)).to(self.weight.dtype))
        self.weight.requires_grad_(False)


def patch_rows(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Every ``kernel`` x ``kernel`` patch of ``images`` (N, C, H, W) as one row, ordered as a conv weight's
    (C, k, k) flattens: (N * (H-k+1) * (W-k+1), C * k * k)."""
    c = images.shape[1]
    windows = images.unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N, C, H', W', k, k)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
