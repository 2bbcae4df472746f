"""Will a batch of this run's samples fit through its model? Asked before training, evaluating, predicting or
exporting, so that a record's sizes (a 8192 x 8192 sample shape, an evaluation batch of 65,536) end in one line
rather than in the kernel's out-of-memory killer.

The activations are measured on PyTorch's meta device: the model is built there (no memory) and run on a
sample of the run's shape, and forward hooks add up the size of every module's output. Training keeps them all
for the backward pass; inference holds about the largest few at a time. The measurement is taken only when a
generous bound on the input alone (:data:`CHEAP_FACTOR`) does not already show that the batch fits, so an
ordinary run pays nothing for it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from resnets.data.layout import model_input_shape
from resnets.io import resources

#: Bytes per input value below which a batch surely fits: the largest activation of a registered model is at most
#: about 20 input sizes (64 channels from 3), and all of them together at most a few hundred.
CHEAP_FACTOR = {"inference": 100 * 4, "training": 2000 * 4}
_HELD_AT_ONCE = 3  # inference: a unit's input, its branch's output and the sum


def check_run_memory(record: Any, batch: int, *, training: bool, what: str) -> None:
    """Refuse a batch of ``batch`` samples of ``record``'s data that its model cannot take in the memory left."""
    if record.data is None or batch < 1:
        return
    shape = model_input_shape(record.data.layout, list(record.data.sample_shape))
    room = resources.available_memory()
    mode = "training" if training else "inference"
    if room is None or batch * math.prod(shape) * CHEAP_FACTOR[mode] <= room:
        return
    measured = activation_bytes(record, shape)
    if measured is None:
        return
    largest, total = measured
    needed = batch * (total if training else _HELD_AT_ONCE * largest)
    resources.check_memory(
        needed,
        f"{what} ({record.model} on a batch of {batch} x {'x'.join(map(str, shape))})",
        "use a smaller batch or smaller samples",
    )


def activation_bytes(record: Any, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(largest, all) bytes of the module outputs for one sample, measured on the meta device; None when the
    model cannot run there."""
    from resnets.models import create_model

    sizes: list[int] = []

    def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    try:
        with torch.device("meta"):
            model = create_model(
                record.model, num_classes=record.num_classes, in_channels=record.in_channels, **record.model_options
            )
        handles = [module.register_forward_hook(count) for module in model.modules()]
        with torch.no_grad():
            model.eval()(torch.empty((1, *shape), device="meta"))
        for handle in handles:
            handle.remove()
    except Exception:  # noqa: BLE001 - an operation without a meta kernel: no measurement, no refusal
        return None
    return (max(sizes), sum(sizes)) if sizes else None


def check_model_memory(
    name: str,
    options: dict[str, Any],
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    training: bool,
    what: str,
) -> None:
    """Refuse a model whose weights (with, for training, their gradients and two optimiser states) do not fit in
    the memory left: counted on the meta device before the model is built (``widths=[20000, ...]`` in a record or
    a flag would otherwise be the out-of-memory killer)."""
    from resnets.models import create_model

    sizes = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
    try:
        with torch.device("meta"):
            model = create_model(name, **sizes, **options)
    except Exception:  # noqa: BLE001 - a name or option the real build refuses, with its own message
        return
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    resources.check_memory(
        weights * (4 if training else 1),
        f"{what} ({name}: {weights / 4:,.0f} weights)",
        "choose a smaller model or model options",
    )
