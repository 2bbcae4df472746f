"""Activation (gradient) checkpointing of one skip-connection unit: memory for compute.

Chen, Xu, Zhang & Guestrin 2016 ("Training Deep Nets with Sublinear Memory Cost") keep only some activations in
the forward pass and recompute the rest in the backward pass. Here a checkpointed unit keeps only its input;
its branch runs a second time when backward reaches it, so a deep network stores about one tensor per unit
instead of every BN, ReLU and conv output inside it, for roughly one more forward pass (about 1/3 more compute).

The recomputation must be invisible:

- Random choices (drop path, dropout) repeat exactly: ``torch.utils.checkpoint`` restores the RNG state.
- Running statistics move once per step: a BatchNorm in train mode would update running_mean, running_var and
  num_batches_tracked again while recomputing. :func:`frozen_running_stats` sets each such norm's momentum to 0
  (the update then leaves the statistics as they are) and restores the momentum and the step count afterwards.
  The recomputation normalises with the same batch statistics, so outputs and gradients are unchanged.
- Whatever reads the unit sees each forward once: a unit that is observed (taps, lesions, forward hooks on it or
  inside it) is not checkpointed, see :func:`has_forward_hooks`.

Under ``torch.compile`` the compiler recomputes from a pure graph that never writes the buffers twice, and
accepts no eager context there, so the plain checkpoint is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.utils.checkpoint import checkpoint


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Norm layers under ``module`` update no running statistics inside the ``with`` block.

    momentum = 0 keeps BatchNorm on its usual kernel (bitwise the same outputs as the first pass) while making
    its update running = 1 * running + 0 * batch, an exact no-op; the step counter is put back on exit.
    """
    norms = [m for m in module.modules() if isinstance(m, _NormBase) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, count) in zip(norms, saved, strict=True):
            norm.momentum = momentum
            if count is not None and norm.num_batches_tracked is not None:
                with torch.no_grad():
                    norm.num_batches_tracked.copy_(count)


def _contexts(module: nn.Module) -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    """checkpoint's context_fn: nothing around the first pass, frozen running statistics around the second."""
    return nullcontext(), frozen_running_stats(module)


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook sits on ``module`` or inside it: a recomputation would call it twice."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _flatten(args: tuple[Any, ...]) -> tuple[list[Any], list[int | None]]:
    """Arguments with lists of tensors spread out, and each list's length (None: not a list).

    A dense layer receives the list of its block's feature maps and a multi-skip layer its history; their
    callers append to these lists after the call, so the recomputation must get a copy as it was. Passing
    the tensors one by one also lets checkpoint find their device (for the RNG state) and hold them itself.
    """
    flat: list[Any] = []
    lengths: list[int | None] = []
    for arg in args:
        if isinstance(arg, list):
            flat.extend(arg)
            lengths.append(len(arg))
        else:
            flat.append(arg)
            lengths.append(None)
    return flat, lengths


def _unflatten(flat: tuple[Any, ...], lengths: list[int | None]) -> list[Any]:
    args: list[Any] = []
    position = 0
    for length in lengths:
        if length is None:
            args.append(flat[position])
            position += 1
        else:
            args.append(list(flat[position : position + length]))
            position += length
    return args


def checkpoint_module(
    call: Callable[..., torch.Tensor], module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> torch.Tensor:
    """``call(*args, **kwargs)`` keeping only its inputs for backward; ``module`` owns the norms to freeze."""
    flat, lengths = _flatten(args)

    def run(*tensors: Any) -> torch.Tensor:
        return call(*_unflatten(tensors, lengths), **kwargs)

    if torch.compiler.is_compiling():
        return checkpoint(run, *flat, use_reentrant=False)
    return checkpoint(run, *flat, use_reentrant=False, context_fn=partial(_contexts, module))
