"""The optimiser a recipe names, over the model's parameters."""

from __future__ import annotations

import torch
from torch import nn

from resnets.train.recipes import Recipe


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum and L2 weight decay, or AdamW with decoupled decay and beta1 = momentum."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
