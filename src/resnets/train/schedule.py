"""The learning rate as a function of the iteration, set before every optimiser step.

A pure function of the step, except for He et al. 2015's deep warm-up: nets of 110 layers and more train
at 0.01 "until the training error is below 80% (about 400 iterations)" and then go back to 0.1. That
switch depends on the training error, so it is state, saved in the checkpoint with the step.
"""

from __future__ import annotations

import math

from torch import nn

from resnets.train.recipes import Recipe

EMA_MOMENTUM = 0.9  # smoothing of the per-batch train error that ends the deep warm-up (~10 steps)


class LRSchedule:
    """``lr(step)`` for one run; ``observe(batch_error)`` after each step feeds the deep warm-up."""

    def __init__(self, recipe: Recipe, *, steps_per_epoch: int, total_steps: int, depth: int = 0) -> None:
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        # The cosine and linear horizon comes from the epochs when set, else from the run's length (max_steps).
        # With both, max_steps stops early on the epochs' curve, and a run stopped at k steps and resumed
        # follows the same curve as an uninterrupted one.
        self.horizon = max(1, round(recipe.epochs * steps_per_epoch) if recipe.epochs is not None else total_steps)
        self.warmup_steps = warmup_steps(recipe, steps_per_epoch)
        self.deep_warmup = recipe.deep_warmup_lr > 0 and depth >= recipe.deep_warmup_min_depth
        self.error_ema: float | None = None

    def lr(self, step: int) -> float:
        """The lr of optimiser step ``step`` (0-based): the deep warm-up's while it lasts, else the recipe's curve."""
        return self.recipe.deep_warmup_lr if self.deep_warmup else self.scheduled_lr(step)

    def scheduled_lr(self, step: int) -> float:
        """The recipe's curve at ``step``, leaving out the deep warm-up (which ends when the train error says)."""
        r = self.recipe
        if step < self.warmup_steps:
            start = r.lr * r.warmup_start_factor
            return start + (r.lr - start) * step / self.warmup_steps
        if r.schedule == "step":
            return r.lr * r.lr_decay ** sum(step >= m for m in r.milestones)
        if r.schedule == "constant":
            return r.lr
        end = r.lr * r.final_lr_factor
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.horizon - self.warmup_steps))
        if r.schedule == "cosine":
            return end + (r.lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return r.lr + (end - r.lr) * progress  # linear: a straight line from lr to end after the warm-up

    def end_step(self) -> int:
        """The steps a run takes to go through the recipe's whole curve; one that stops earlier never sees its end.

        Cosine and linear: their horizon. A step schedule: up to and including its last milestone (the first
        step at the lowest lr). Constant: one step past the warm-up (the first step at the peak).
        """
        r = self.recipe
        if r.schedule == "step":
            return max([self.warmup_steps + 1 if self.warmup_steps else 0, *(m + 1 for m in r.milestones)])
        if r.schedule == "constant":
            return self.warmup_steps + 1 if self.warmup_steps else 0
        return self.horizon

    def final_lr(self) -> float:
        """The lr the curve ends on (see :meth:`end_step`)."""
        r = self.recipe
        if r.schedule == "step":
            return r.lr * r.lr_decay ** len(r.milestones)
        return r.lr if r.schedule == "constant" else r.lr * r.final_lr_factor

    def observe(self, batch_error: float) -> None:
        """Feed the train error (%) of the last batch; ends the deep warm-up once its average is low."""
        if not self.deep_warmup:
            return
        previous = batch_error if self.error_ema is None else self.error_ema
        self.error_ema = ema = EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * batch_error
        if ema < self.recipe.deep_warmup_until_error:
            self.deep_warmup = False

    def state_dict(self) -> dict:
        return {"deep_warmup": self.deep_warmup, "error_ema": self.error_ema}

    def load_state_dict(self, state: dict) -> None:
        self.deep_warmup = bool(state["deep_warmup"])
        self.error_ema = state["error_ema"]


def warmup_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    """The warm-up's length in iterations: ``warmup_steps`` when the recipe sets it, else ``warmup_epochs``'."""
    return recipe.warmup_steps if recipe.warmup_steps is not None else round(recipe.warmup_epochs * steps_per_epoch)


def weighted_depth(model: nn.Module) -> int:
    """Layers with weights on the main path (convs and linears, not projection shortcuts or SE gates).

    This is the paper's depth: CIFAR ResNet-110 counts 1 stem conv + 108 block convs + 1 fc = 110.
    """
    return sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) and not any(p in ("downsample", "se") for p in name.split("."))
        for name, m in model.named_modules()
    )
