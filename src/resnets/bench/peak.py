"""The machine's peak FLOP/s, measured in this run with a large square matmul.

A 2048-square matmul runs at the rate the BLAS library reaches on this machine, which is as close to the
hardware's peak as PyTorch code gets; a case's share of it says how much of the machine a model uses,
and unlike an absolute rate it carries over between machines. It is measured in the dtype the run computes
in (bf16 where autocast is on), with the threads the run uses, best of a few rounds.
"""

from __future__ import annotations

import math
import time

import torch

from resnets.bench.timing import Clock


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
