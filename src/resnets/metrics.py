"""Classification metrics, and the one evaluation loop that training and ``resnets eval`` both run.

Training records a test error each epoch and ``resnets eval`` reports one for a checkpoint; both come from
:func:`evaluate`, with the run's precision and loader, so the two numbers are the same number. All rates are
in percent. Top-5 error is reported only for models with more than 5 classes: with 5 or fewer it is 0 by
construction, so it is ``None`` (null in eval.json).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.device import Precision
from resnets.errors import DataError

TOP_K = 5


@dataclass
class EvalResult:
    """What one evaluation measured; ``to_dict`` is the metrics part of eval.json."""

    classes: list[str]
    n: int
    loss: float  # mean cross-entropy, no label smoothing
    top1_error: float  # percent
    top5_error: float | None  # percent; None when the model has 5 classes or fewer
    per_class_accuracy: dict[str, float | None]  # percent; None for a class with no samples in the split
    per_class_count: dict[str, int]
    confusion: list[list[int]]  # confusion[true][predicted]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MetricAccumulator:
    """Counts over batches of logits, so a whole split never has to sit in memory at once."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.top5_correct = 0
        self.loss_sum = 0.0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: ``logits`` (B, num_classes), ``targets`` (B,) class indices."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise DataError(
                f"the model gave outputs of shape {tuple(logits.shape)}; expected (batch, {self.num_classes})"
            )
        logits, targets = logits.detach().float(), targets.detach().long()
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise DataError(
                f"labels range over [{int(targets.min())}, {int(targets.max())}] but the model has "
                f"{self.num_classes} classes"
            )
        self.loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        logits, targets = logits.cpu(), targets.cpu()
        predicted = logits.argmax(dim=1)
        self.confusion += torch.bincount(targets * self.num_classes + predicted, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )
        if self.num_classes > TOP_K:
            top = logits.topk(TOP_K, dim=1).indices  # (B, 5)
            self.top5_correct += int((top == targets[:, None]).any(dim=1).sum())

    def result(self, classes: Sequence[str] | None = None) -> EvalResult:
        """The metrics so far; ``classes`` names the classes (default "0", "1", ...)."""
        names = [str(c) for c in (classes if classes is not None else range(self.num_classes))]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        confusion = self.confusion
        n = int(confusion.sum())
        if n == 0:
            raise DataError("the split is empty; there is nothing to evaluate")
        correct = confusion.diagonal()
        counts = confusion.sum(dim=1)
        per_class = {
            name: (100.0 * int(correct[i]) / int(counts[i]) if counts[i] else None) for i, name in enumerate(names)
        }
        return EvalResult(
            classes=names,
            n=n,
            loss=self.loss_sum / n,
            top1_error=100.0 * (n - int(correct.sum())) / n,
            top5_error=100.0 * (n - self.top5_correct) / n if self.num_classes > TOP_K else None,
            per_class_accuracy=per_class,
            per_class_count={name: int(counts[i]) for i, name in enumerate(names)},
            confusion=confusion.tolist(),
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    precision: Precision | None = None,
    classes: Sequence[str] | None = None,
) -> EvalResult:
    """Run ``model`` in eval mode over ``batches`` of (inputs, targets) under ``precision``'s autocast.

    The model's train/eval mode is restored afterwards, so training can call this between steps.
    """
    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator(num_classes)
    try:
        for x, y in batches:
            if precision is None:
                logits = model(x)
            else:
                with precision.autocast():
                    logits = model(x)
            accumulator.update(logits, y)
    finally:
        model.train(was_training)
    return accumulator.result(classes)


def format_table(result: EvalResult) -> str:
    """A short table for the terminal: the headline errors, then each class's accuracy."""
    top5 = "n/a (5 classes or fewer)" if result.top5_error is None else f"{result.top5_error:.2f}%"
    lines = [f"samples     {result.n}", f"top-1 error {result.top1_error:.2f}%", f"top-5 error {top5}", ""]
    width = max(8, *(len(c) for c in result.classes))
    lines.append(f"{'class':<{width}}  {'n':>6}  {'accuracy':>8}")
    for name in result.classes:
        accuracy = result.per_class_accuracy[name]
        shown = "n/a" if accuracy is None else f"{accuracy:.2f}%"
        lines.append(f"{name:<{width}}  {result.per_class_count[name]:>6}  {shown:>8}")
    return "\n".join(lines)
