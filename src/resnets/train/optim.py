"""The optimiser a recipe names, over the model's parameters, and the learning rate of each of its groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnets.layers.whitening import PatchWhitening
from resnets.train.recipes import Recipe


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The optimiser's parameter groups, each with its ``lr_scale`` (its lr is the schedule's times it) and
    ``train_epochs`` (None, or the epochs after which its lr is 0):

    - every tensor of two or more dimensions (conv and linear weights), decayed by ``weight_decay``;
    - where ``decay_norm_and_bias`` is off or ``bias_lr_scale`` is not 1, the tensors of at most one dimension
      (norm scales and shifts, biases) apart: without decay (timm's ``param_groups_weight_decay``: decaying a
      norm's scale only shrinks a factor the next normalisation undoes, and a bias has no scale to regularise),
      or at ``bias_lr_scale`` times the lr with the weight decay divided by it, so that their decay per step
      stays the weights' (airbench's "bias scaler");
    - with ``whiten_bias_epochs``, the patch-whitening conv's bias alone, trained for that many epochs.

    Every parameter is listed, frozen ones included, so the optimiser's state indexes the same tensors
    whatever a fine-tune freezes; with the recipe's defaults the groups are those of earlier versions.
    """
    r = recipe
    params = list(model.parameters())
    whitening = set()
    if r.whiten_bias_epochs is not None:
        whitening = {id(m.bias) for m in model.modules() if isinstance(m, PatchWhitening) and m.bias is not None}
    rest = [p for p in params if id(p) not in whitening]
    groups: list[dict[str, Any]]
    if r.decay_norm_and_bias and r.bias_lr_scale == 1.0:
        groups = [_group(rest, r.weight_decay)]
    else:
        small = [p for p in rest if p.ndim <= 1]
        decay = r.weight_decay / r.bias_lr_scale if r.decay_norm_and_bias else 0.0
        groups = [_group([p for p in rest if p.ndim > 1], r.weight_decay), _group(small, decay, r.bias_lr_scale)]
    if whitening:
        groups.append(_group([p for p in params if id(p) in whitening], r.weight_decay, epochs=r.whiten_bias_epochs))
    return groups


def _group(params: list[nn.Parameter], decay: float, scale: float = 1.0, epochs: float | None = None) -> dict:
    return {"params": params, "weight_decay": decay, "lr_scale": scale, "train_epochs": epochs}


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum and L2 weight decay, or AdamW with decoupled decay and beta1 = momentum.

    The schedule sets every group's ``lr`` at each step (:func:`set_lr`).
    """
    groups = param_groups(model, recipe)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float, epoch: float) -> None:
    """Give each group the schedule's ``lr`` times its ``lr_scale``, or 0 once ``epoch`` (completed epochs,
    fractional) reaches its ``train_epochs``: a frozen group neither steps nor decays."""
    for group in optimizer.param_groups:
        until = group.get("train_epochs")
        group["lr"] = 0.0 if until is not None and epoch >= until else lr * group.get("lr_scale", 1.0)
