"""The lines ``resnets train`` prints before its first step: what will run, on what, how, for how long, where.

A run that starts silently leaves the user to guess whether bf16 is on, how many steps an epoch has or where the
files go; these lines say it once, from the objects the run has already resolved (nothing is decided here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.device import Precision
from resnets.io.text import printable
from resnets.io.weight_files import LoadedFile
from resnets.models.profile import count_parameters
from resnets.train.config import TrainConfig
from resnets.train.recipes import Recipe
from resnets.train.schedule import LRSchedule, warmup_steps, weighted_depth
from resnets.words import counted


def describe_device(device: torch.device) -> str:
    """``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' if threads != 1 else ''})"


def banner_lines(
    config: TrainConfig,
    *,
    model: nn.Module,
    bundle: Any,  # resnets.data.DataBundle
    layout: str,  # how samples reach the model: "image", "vector" or "sequence" (resnets.data.layout)
    precision: Precision,
    device_name: str,
    steps_per_epoch: int,  # per process
    last_step: int,
    run_dir: str | Path,
    resume_step: int | None = None,  # the restored step of a resumed run
    world_size: int = 1,
    loaded: LoadedFile | None = None,  # the weight file the model starts from
) -> list[str]:
    """The pre-run block, one string per line, without trailing newlines; every line printable (the data's name,
    its classes' origin, the run and weight paths come from files and folder names)."""
    r = config.recipe
    params = count_parameters(model)
    memory = ("channels_last" if precision.channels_last else "NCHW") if layout == "image" else f"{layout} input"
    lines = [
        f"model     {config.model}: {params:,} parameters",
        f"data      {_data(bundle)}",
        f"device    {device_name}; {precision.describe()}; {memory}",
        f"recipe    {r.name}: {_optimizer(r, world_size)}",
        f"schedule  {_schedule(r, steps_per_epoch, model)}",
        f"length    {_length(r, steps_per_epoch, last_step)}",
        *([f"last lr   {stop}"] if (stop := _stop(r, steps_per_epoch, last_step)) else []),
        f"augment   {_augment(r, bundle, layout)}",
        f"run dir   {run_dir}",
    ]
    if bundle.identity:  # what the data was taken to be, and why (content, name or folder)
        lines.insert(2, f"          {bundle.identity}")
    if loaded is not None:
        lines.insert(1, f"weights   {_weights(loaded, model)}")
    if resume_step is not None:
        lines.append(f"resuming at step {resume_step:,} of {last_step:,}")
    return [printable(line) for line in lines]


def _weights(loaded: LoadedFile, model: nn.Module) -> str:
    """Where the starting weights came from, how much of the model they fill, and whether the head is new."""
    report = loaded.report
    text = f"{loaded.path} ({loaded.origin}): {counted(len(report.loaded), 'tensor')} loaded"
    if not report.fresh:
        return f"{text}, the classifier's included"
    classes = counted(model.num_classes, "class", "classes")
    return f"{text}; the classifier ({model.classifier_name}) is new, for {classes}, trained from scratch"


def _data(bundle: Any) -> str:
    def size(split: Any) -> int:
        return 0 if split is None else len(split)

    shape = "x".join(str(s) for s in bundle.sample_shape)
    skipped = f", {bundle.skipped_files:,} unreadable files skipped" if bundle.skipped_files else ""
    return (
        f"{bundle.name}: {size(bundle.train):,} train / {size(bundle.val):,} val / {size(bundle.test):,} test, "
        f"{len(bundle.classes):,} classes, samples {shape}{skipped}"
    )


def _optimizer(r: Recipe, world_size: int) -> str:
    if r.optimizer == "sgd":
        words = f"sgd{' nesterov' if r.nesterov else ''} lr {r.lr:g} momentum {r.momentum:g}"
    else:
        words = f"{r.optimizer} lr {r.lr:g} beta1 {r.momentum:g}"
    words += f" weight decay {r.weight_decay:g}"
    if not r.decay_norm_and_bias:
        words += " (not on norms and biases)"
    batch = f"batch {r.batch_size:,}"
    if world_size > 1:
        batch += f" x {world_size} processes = {r.batch_size * world_size:,}"
    extras = [f"EMA {r.ema_decay:g}"] if r.ema_decay else []
    extras += [f"grad clip {r.grad_clip_norm:g}"] if r.grad_clip_norm else []
    extras += [f"biases at {r.bias_lr_scale:g} x lr"] if r.bias_lr_scale != 1 else []
    if r.lookahead_every:
        extras.append(
            f"lookahead every {r.lookahead_every} steps from epoch {r.lookahead_start_epochs:g} "
            f"(decay {r.lookahead_decay:g})"
        )
    if r.whiten_images:
        bias = "" if r.whiten_bias_epochs is None else f", its bias trained {counted(r.whiten_bias_epochs, 'epoch')}"
        extras.append(f"patch whitening fitted on {r.whiten_images:,} images{bias}")
    return ", ".join([words, batch, *extras])


def _schedule(r: Recipe, steps_per_epoch: int, model: nn.Module) -> str:
    if r.schedule == "step":
        parts = [
            f"step, x{r.lr_decay:g} at steps {', '.join(f'{m:,}' for m in r.milestones)}" if r.milestones else "step"
        ]
    elif r.schedule in ("cosine", "linear"):
        parts = [f"{r.schedule} to {f'{r.final_lr_factor:g} x lr' if r.final_lr_factor else '0'}"]
    else:
        parts = [r.schedule]
    steps = warmup_steps(r, steps_per_epoch)
    if r.warmup_steps is not None and steps:
        parts.append(f"warm-up {counted(steps, 'step')} from {r.warmup_start_factor:g} x lr")
    elif steps:
        parts.append(
            f"warm-up {counted(r.warmup_epochs, 'epoch')} ({counted(steps, 'step')}) from {r.warmup_start_factor:g} x lr"
        )
    else:
        parts.append("no warm-up")
    if r.deep_warmup_lr > 0 and weighted_depth(model) >= r.deep_warmup_min_depth:
        parts.append(f"lr {r.deep_warmup_lr:g} until the train error < {r.deep_warmup_until_error:g}%")
    parts.append(f"label smoothing {r.label_smoothing:g}")
    return ", ".join(parts)


def _length(r: Recipe, steps_per_epoch: int, last_step: int) -> str:
    text = (
        f"{counted(last_step, 'step')} = {counted(last_step / steps_per_epoch, 'epoch')} of "
        f"{counted(steps_per_epoch, 'step')}"
    )
    if r.max_steps is not None and last_step == r.max_steps:
        text += " (max_steps)"
    every = "every epoch" if r.eval_every == 1 else f"every {r.eval_every} epochs"
    views = {0: "", 1: " on each image and its mirror", 2: " on mirrors and 1-pixel shifts too"}[r.tta]
    return f"{text}; evaluated {every}{views}"


def _stop(r: Recipe, steps_per_epoch: int, last_step: int) -> str | None:
    """Where the lr stands at the run's last step, when the run stops before the recipe's curve ends; else None.

    A run cut short by ``max_steps`` on a longer horizon never decays (or never leaves its warm-up), which
    nothing else on the screen would show. The deep warm-up is left out: when it ends depends on the training.
    """
    schedule = LRSchedule(r, steps_per_epoch=steps_per_epoch, total_steps=last_step)  # as the engine builds it
    end = schedule.end_step()
    if last_step >= end:
        return None
    parts = [f"{schedule.scheduled_lr(last_step - 1):.3g} at step {last_step:,}, the run's last"]
    if last_step <= schedule.warmup_steps:
        parts.append(f"still in the warm-up of {counted(schedule.warmup_steps, 'step')}")
    if r.schedule == "step":
        later = [m for m in r.milestones if m >= last_step]
        parts.append(f"the milestones at steps {', '.join(f'{m:,}' for m in later)} are not reached")
    elif r.schedule in ("cosine", "linear"):
        fit = "--max-steps without --epochs fits it to the run"
        parts.append(f"the {r.schedule} reaches {schedule.final_lr():.3g} at step {end:,} ({fit})")
    return "; ".join(parts)


def _augment(r: Recipe, bundle: Any, layout: str) -> str:
    """What the recipe asks for, as far as this data and model allow (crops and flips need images)."""
    parts = []
    if r.augment and layout == "image" and bundle.kind == "image":
        if r.crop_padding:
            parts.append(f"random crop (pad {r.crop_padding}{', reflect' if r.pad_mode == 'reflect' else ''})")
        if bundle.flip:
            parts.append("alternating flips" if r.alternating_flip else "flip")
    parts += [f"{name} {value:g}" for name, value in _mixing(r) if value]
    return ", ".join(parts) if parts else "none"


def _mixing(r: Recipe) -> list[tuple[str, float]]:
    return [("mixup", r.mixup_alpha), ("cutmix", r.cutmix_alpha), ("random erasing", r.random_erasing)]
