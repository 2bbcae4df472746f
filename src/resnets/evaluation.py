"""Evaluate a trained model on a data split: top-1 and top-5 error, per-class accuracy, confusion matrix.

All rates are in percent, as in the training metrics. Top-5 error is reported only for models with
more than 5 classes: with 5 or fewer it is 0 by construction, so it is ``None`` (null in eval.json).
A run directory is evaluated with the statistics it was trained with (its config.json), on its own
validation split when asked for ``val``; a bare weight file with the data's own training statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resnets.errors import DataError
from resnets.models.base import SkipNetwork
from resnets.weights import load_model

SPLITS = ("test", "val", "train")
TOP_K = 5


@dataclass
class EvalResult:
    """What one evaluation measured; ``to_dict`` is the content of eval.json."""

    classes: list[str]
    n: int
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

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: ``logits`` (B, num_classes), ``targets`` (B,) class indices."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise DataError(f"the model gave outputs of shape {tuple(logits.shape)}; "
                            f"expected (batch, {self.num_classes})")
        logits, targets = logits.detach().float().cpu(), targets.detach().long().cpu()
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise DataError(f"labels range over [{int(targets.min())}, {int(targets.max())}] but the model has "
                            f"{self.num_classes} classes")  # fmt: skip
        predicted = logits.argmax(dim=1)
        self.confusion += torch.bincount(
            targets * self.num_classes + predicted, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)
        if self.num_classes > TOP_K:
            top = logits.topk(TOP_K, dim=1).indices  # (B, 5)
            self.top5_correct += int((top == targets[:, None]).any(dim=1).sum())

    def result(self, classes: Sequence[str]) -> EvalResult:
        if len(classes) != self.num_classes:
            raise ValueError(f"{len(classes)} class names for {self.num_classes} classes")
        confusion = self.confusion
        n = int(confusion.sum())
        if n == 0:
            raise DataError("the split is empty; there is nothing to evaluate")
        correct = confusion.diagonal()
        counts = confusion.sum(dim=1)
        names = [str(c) for c in classes]
        per_class = {
            name: (100.0 * int(correct[i]) / int(counts[i]) if counts[i] else None) for i, name in enumerate(names)
        }
        return EvalResult(
            classes=names,
            n=n,
            top1_error=100.0 * (n - int(correct.sum())) / n,
            top5_error=100.0 * (n - self.top5_correct) / n if self.num_classes > TOP_K else None,
            per_class_accuracy=per_class,
            per_class_count={name: int(counts[i]) for i, name in enumerate(names)},
            confusion=confusion.tolist(),
        )


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str]
) -> EvalResult:
    """Run ``model`` in eval mode over ``batches`` of (inputs, targets) and measure it."""
    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator(len(classes))
    try:
        for x, y in batches:
            accumulator.update(model(x), y)
    finally:
        model.train(was_training)
    return accumulator.result(classes)


def evaluate_source(
    source: str | Path,
    data: str,
    *,
    model: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    device: str = "cpu",
    image_size: int | None = None,
    which: str = "best",
) -> tuple[EvalResult, dict[str, Any]]:
    """Load a run directory or weight file and evaluate it on ``split`` of the data set ``data``.

    Returns the result and a description of what was evaluated (model, checkpoint, data, split,
    statistics used), which eval.json records next to the metrics.
    """
    from resnets.data import BatchLoader, load_data

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    net, info = load_model(source, model=model, which=which)
    config = info.get("config") or {}
    saved = {**config, **(config.get("data") or {})}  # split settings live under "data" (top level in older runs)
    from_run = "run_dir" in info
    if image_size is None and from_run:
        image_size = saved.get("image_size")
    # the run's own seeded validation split, so that "val" means the images it did not train on
    split_options = dict(val_fraction=saved.get("val_fraction") or 0.0, val_size=saved.get("val_size"),
                         seed=int(config.get("seed") or 0)) if from_run else {}  # fmt: skip
    bundle = load_data(data, data_dir, image_size=image_size, **split_options)
    dataset = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
    if dataset is None or len(dataset) == 0:
        raise DataError(f"{bundle.name} has no {split} split" + ("; a run's validation split exists only when it "
                        "was trained with --val-size or a val_fraction" if split == "val" else ""))  # fmt: skip
    classes = check_compatible(net, info, bundle.classes, bundle.kind, bundle.sample_shape, bundle.name)
    use_run_stats = from_run and info.get("mean") is not None and info.get("std") is not None
    mean, std = (info["mean"], info["std"]) if use_run_stats else (bundle.mean, bundle.std)
    net = net.to(device)
    loader = BatchLoader(dataset, batch_size, shuffle=False, seed=0, mean=mean, std=std,
                         layout=net.input_kind, device=device)  # fmt: skip
    result = evaluate_model(net, loader.epoch_batches(0), classes)
    described = {key: info.get(key) for key in ("model", "model_options", "num_classes", "in_channels", "checkpoint")}
    described.update(source=str(source), data=bundle.name, split=split, mean=list(mean), std=list(std),
                     statistics="run" if use_run_stats else "data")  # fmt: skip
    return result, described


def check_compatible(
    net: SkipNetwork, info: dict[str, Any], classes: Sequence[str], kind: str, sample_shape: Sequence[int], name: str
) -> list[str]:
    """Fail with a clear message when the data cannot feed the model; returns the class names to report.

    The run's class names win over the data's when both exist and agree in number; the same names in a
    different order would scramble every label, so that is an error.
    """
    if len(classes) != net.num_classes:
        raise DataError(f"{name} has {len(classes)} classes but the model has {net.num_classes}; evaluate on the "
                        f"data the model was trained on, or load it with a matching --num-classes")  # fmt: skip
    derived = input_channels(net.input_kind, kind, tuple(sample_shape))
    if derived != net.in_channels:
        what = {"image": "channels", "vector": "features", "sequence": "features per token"}[net.input_kind]
        raise DataError(f"{name} samples of shape {tuple(sample_shape)} give the model {derived} input {what}, "
                        f"but it was built for {net.in_channels}; use data like the training data"
                        + (" (same image size)" if net.input_kind != "image" else "")
                        + (f", e.g. --image-size {info['sample_shape'][-1]}"
                           if info.get("sample_shape") and len(info["sample_shape"]) == 3 else ""))  # fmt: skip
    run_classes = info.get("classes")
    if not run_classes:
        return [str(c) for c in classes]
    ours, theirs = [str(c) for c in run_classes], [str(c) for c in classes]
    if ours != theirs and sorted(ours) == sorted(theirs):
        raise DataError(f"{name} has the run's classes in a different order ({', '.join(theirs[:5])}, ...) "
                        f"than the run ({', '.join(ours[:5])}, ...); the labels would not match")  # fmt: skip
    return [str(c) for c in run_classes]


def input_channels(input_kind: str, data_kind: str, sample_shape: tuple[int, ...]) -> int:
    """What the model's ``in_channels`` must be for samples of ``sample_shape``.

    Images feed image models as (C, H, W), vector models flattened (C*H*W), and sequence models one row
    per token (H, C*W), as the training setup does.
    """
    if input_kind == "vector":
        return int(torch.Size(sample_shape).numel())
    if data_kind != "image" or len(sample_shape) != 3:
        raise DataError(f"a model taking {input_kind} input cannot read {data_kind} samples of shape "
                        f"{tuple(sample_shape)}; use a vector model for tabular data")  # fmt: skip
    channels, _, width = sample_shape
    return channels if input_kind == "image" else channels * width


def write_eval_report(result: EvalResult, described: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write eval.json (metrics and what was evaluated) and confusion.png into ``out_dir``."""
    from resnets.reports.confusion import plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "eval.json"
    json_path.write_text(json.dumps({**result.to_dict(), **described}, indent=2) + "\n")
    title = f"{described.get('model', 'model')} on {described.get('data', 'data')} ({described.get('split', '')})"
    png_path = plot_confusion(result.confusion, result.classes, out / "confusion.png", title=title)
    return {"json": json_path, "png": png_path}


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
