"""Small helpers the instruments share: spreads over seeds, numbers read back from JSON, batches, error rates.

Instruments measure through the shared model interface (``residual_blocks()`` and the unit operations:
``lesioned``, ``scaled``, ``tapped``, ``gate``), never through a family's internals.

BatchNorm at initialisation: a deep net fresh from ``create_model`` has running statistics 0/1, so in eval
mode its outputs overflow (ResNet-1202: 1e8 or NaN). Instruments that measure untrained nets use train-mode
BN (batch statistics) and say so in the JSON (see :mod:`resnets.studies.untrained`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

import torch

from resnets.device import Precision
from resnets.metrics import evaluate
from resnets.models import SkipNetwork
from resnets.runs import Run

BN_EVAL_MODE = "eval-mode running statistics (trained)"

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of repeated measurements (std 0 for one value).

    Non-finite or missing values (a diverged or undefined measurement) are left out; ``dropped`` counts them.
    """
    given = list(values)
    data = [float(v) for v in given if v is not None and math.isfinite(v)]
    if not data:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0, "dropped": len(given)}
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    return {
        "mean": statistics.fmean(data),
        "std": std,
        "min": min(data),
        "max": max(data),
        "n": len(data),
        "dropped": len(given) - len(data),
    }


def number(value: Any) -> float:
    """A number read back from JSON: null (a NaN or an infinity when written) is NaN."""
    return math.nan if value is None else float(value)


def fmt(stats: dict[str, Any], digits: int = 3) -> str:
    """``mean ± std`` of a :func:`spread`, for tables (``-`` where nothing was measured)."""
    mean, std = number(stats["mean"]), number(stats["std"])
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}g} ± {std:.2g}"


def first_batches(loader: Any, samples: int) -> Batches:
    """The first ``samples`` samples of a loader's epoch 0, as a list of (inputs, targets) batches."""
    batches, seen = [], 0
    for x, y in loader.epoch_batches(0):
        take = min(len(y), samples - seen)
        batches.append((x[:take], y[:take]))
        seen += take
        if seen >= samples:
            break
    return batches


def subset_batches(run: Run, samples: int, seed: int, split: str = "test") -> Batches:
    """``samples`` samples of ``split`` drawn without replacement by ``seed`` (all, in order, if fewer), batched
    and normalised as the run measures them (``Run.loader`` never shuffles or augments, even for "train")."""
    loader = run.loader(split)
    n = int(loader.targets.shape[0])
    if samples >= n:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    return [loader.batch(0, i, order) for i in range(math.ceil(len(order) / loader.batch_size))]


def error_rate(model: SkipNetwork, batches: Batches, precision: Precision | None = None) -> float:
    """Top-1 error of ``model`` on ``batches`` as a fraction, measured by the one evaluation loop."""
    result = evaluate(model, batches, model.num_classes, precision=precision)
    correct = sum(result.confusion[i][i] for i in range(len(result.confusion)))
    return (result.n - correct) / result.n


def over_training_rows(nets: dict[str, dict[str, Any]], quantity: str, digits: str = ".3g") -> list[str]:
    """A Markdown table of each net's headline ``quantity`` at every kept snapshot (its ``over_training``)."""
    rows = ["", f"| net | step | {quantity} |", "|---|---|---|"]
    for label, net in nets.items():
        found = net["over_training"]
        for step, value in zip(found["steps"], found["values"]):
            rows.append(f"| {label} | {step} | {'-' if value is None else format(value, digits)} |")
    return rows


def kind(model: SkipNetwork) -> str:
    """``residual`` where any unit has a shortcut (Highway nets included), else ``plain``."""
    return "residual" if any(info.has_shortcut for info in model.residual_blocks()) else "plain"
