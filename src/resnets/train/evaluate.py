"""Loss and top-1 error of a model over a whole split, without touching its training state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnets.train.device import Precision


@torch.no_grad()
def evaluate(model: nn.Module, loader, precision: Precision) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and top-1 error in percent over ``loader``'s epoch 0."""
    was_training = model.training
    model.eval()
    loss_sum, errors, seen = 0.0, 0, 0
    for x, y in loader.epoch_batches(0):
        with precision.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        errors += (logits.argmax(1) != y).sum().item()
        seen += y.numel()
    model.train(was_training)
    if seen == 0:
        return float("nan"), float("nan")
    return loss_sum / seen, 100.0 * errors / seen
