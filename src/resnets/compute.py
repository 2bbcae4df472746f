"""Compute, counted and compared with the machine: FLOPs of training and evaluation, and the measured peak.

A run's compute is counted as speedruns count it (airbench quotes PFLOPs): a training image costs 6 x the
model's multiply-adds at its input size (2 FLOPs per multiply-add forward, twice that backward), an evaluated
image 2 x, once per test-time-augmentation view. Layers without multiply-adds (norms, activations, pooling)
are not counted, as ``torch.utils.flop_counter`` does not count them.

The machine's peak FLOP/s is measured with a large square matmul: a 2048-square matmul runs at the rate the BLAS
library reaches on this machine, which is as close to the hardware's peak as PyTorch code gets; a run's or a
benchmark case's share of it says how much of the machine the work uses, and unlike an absolute rate it carries
over between machines. It is measured in the dtype the work computes in (bf16 where autocast is on), with the
threads the work uses, best of a few rounds.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch

Clock = Callable[[], float]
TRAIN_FLOPS_PER_MAC = 6  # forward 2, backward 4 (gradients of the inputs and of the weights)
EVAL_FLOPS_PER_MAC = 2


def training_flops(macs_per_sample: int, samples: int) -> float:
    """FLOPs of training on ``samples`` samples (forward and backward) of a model of ``macs_per_sample``."""
    return float(TRAIN_FLOPS_PER_MAC) * macs_per_sample * samples


def evaluation_flops(macs_per_sample: int, samples: int, views: int = 1) -> float:
    """FLOPs of evaluating ``samples`` samples, each on ``views`` test-time views."""
    return float(EVAL_FLOPS_PER_MAC) * macs_per_sample * samples * views


def matmul_flops(n: int) -> int:
    """FLOPs of one (n x n) @ (n x n) product: n^2 outputs, each n multiplies and n adds."""
    return 2 * n**3


def measure_peak(
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    reps: int = 4,
    rounds: int = 3,
    clock: Clock = time.perf_counter,
) -> float:
    """Best FLOP/s over ``rounds`` of ``reps`` back-to-back ``size``-square matmuls (after one untimed one)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.mm(a, b)  # warm-up: thread pool, BLAS buffers
    best = 0.0
    for _ in range(rounds):
        start = clock()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        elapsed = clock() - start
        if elapsed > 0:
            best = max(best, matmul_flops(size) * reps / elapsed)
    if not (math.isfinite(best) and best > 0):
        raise RuntimeError(f"the peak measurement gave {best} FLOP/s; the clock did not advance")
    return best


def peak_share(flops_per_item: float, items_per_s: float, peak: float) -> float:
    """The fraction of ``peak`` FLOP/s that ``items_per_s`` items of ``flops_per_item`` each amount to."""
    if not (peak > 0 and math.isfinite(items_per_s)):
        return math.nan
    return flops_per_item * items_per_s / peak


@functools.cache
def machine_peak(dtype: torch.dtype, threads: int) -> float:
    """:func:`measure_peak` once per process, dtype and thread count (a run's summary asks for it)."""
    return measure_peak(dtype)
