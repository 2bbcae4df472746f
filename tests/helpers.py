"""Small helpers shared by tests in several folders."""

from __future__ import annotations

import functools

import torch
from torch import nn


@torch.no_grad()
def randomize_bn(module: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters away from 0/1, in eval mode, so that no BN is the identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    return module.eval()


@functools.cache
def model_size(name: str) -> tuple[int, int]:
    """(parameters, residual units) of a registered model, built once per process on the meta device: the tests
    that put big models under the slow marker decide from it at collection time."""
    from resnets.models.profile import build_meta, count_parameters

    model = build_meta(name)
    return count_parameters(model), len(model.residual_blocks())
