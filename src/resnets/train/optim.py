"""The optimiser a recipe names, over the model's parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnets.train.recipes import Recipe


def param_groups(model: nn.Module, weight_decay: float, *, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one group decayed by ``weight_decay``, or (``decay_norm_and_bias``
    false) two, the second holding every tensor of at most one dimension (norm scales and shifts, biases) with
    no decay, as timm's ``param_groups_weight_decay``. Decaying a norm's scale only shrinks a factor the next
    layer's normalisation undoes, and a bias has no scale to regularise.

    Every parameter is listed, frozen ones included, so the optimiser's state indexes the same tensors
    whatever a fine-tune freezes.
    """
    params = list(model.parameters())
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay, no_decay = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum and L2 weight decay, or AdamW with decoupled decay and beta1 = momentum.

    The schedule sets every group's ``lr`` at each step; the groups differ only in their weight decay.
    """
    groups = param_groups(model, recipe.weight_decay, decay_norm_and_bias=recipe.decay_norm_and_bias)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
