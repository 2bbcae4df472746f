"""An exponential moving average of the weights, updated after every optimiser step (Polyak & Juditsky 1992).

The average is PyTorch's :class:`torch.optim.swa_utils.AveragedModel` with its EMA rule,
``ema <- decay * ema + (1 - decay) * w`` (``torch.lerp``), over parameters and buffers alike, so that the
averaged model's BatchNorm statistics belong to the averaged weights. Integer buffers (BatchNorm's
``num_batches_tracked``) are counts, not weights: they are copied, not averaged.

A run with an EMA evaluates, and saves as its weight file, the average; the raw weights it trains go into the
checkpoint's training state, so that resuming continues both exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

#: ``multi_avg_fn(averaged, current, n_averaged)``, called per group of same-device, same-dtype tensors.
AverageRule = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], torch.Tensor], None]


def _ema_rule(decay: float) -> AverageRule:
    """PyTorch's EMA for floating-point tensors; integer tensors take the model's value."""
    lerp = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n: torch.Tensor) -> None:
        if averaged[0].is_floating_point():
            lerp(averaged, current, n)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """The EMA of ``model``'s weights, starting from its current ones; ``.update_parameters(model)`` after each
    step gives, after steps 1..t, ``ema_t = decay * ema_{t-1} + (1 - decay) * w_t`` with ``ema_0 = w_0``.

    ``model`` is the plain module (not DDP's or torch.compile's wrapper): the average's state-dict keys are
    then the weight format, and every rank, holding the same weights after each step, holds the same average.
    """
    ema = AveragedModel(model, multi_avg_fn=_ema_rule(decay), use_buffers=True)
    ema.update_parameters(model)  # the first call copies (n_averaged 0 -> 1): every later call averages
    return ema.eval()  # only ever measured and saved
