"""Compute, counted and compared with the machine: FLOPs of training and evaluation, and the measured peak.

A run's compute is counted as speedruns count it (airbench quotes PFLOPs): a training image costs 6 x the
model's multiply-adds at its input size (2 FLOPs per multiply-add forward, twice that backward), an evaluated
image 2 x, once per test-time-augmentation view. Layers without multiply-adds (norms, activations, pooling)
are not counted, as ``torch.utils.flop_counter`` does not count them.

The machine's peak FLOP/s is measured with a large square matmul: a 2048-square matmul runs at the rate the BLAS
library reaches on this machine, which is as close to the hardware's peak as PyTorch code gets; a run's or a
benchmark case's share of it says how much of the machine the work uses, and unlike an absolute rate it carries
over between machines. It is measured in the dtype the work computes in (bf16 where autocast is on), with the
threads the work uses, best of a few rounds. On a GPU the matmul is larger (8192 square: a 2048-square one leaves
an H100 mostly idle), and the clock is read only after the device has finished the queued work. Its fp32 matmul
follows torch's matmul precision (full fp32 unless a user allows TF32), while cuDNN runs fp32 convolutions in TF32
by default: an fp32 network's share of the fp32 peak can read high on a GPU; bf16 work is measured against bf16.
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


#: The side of the peak's square matmul on each kind of device: large enough to keep its units busy.
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}


def device_clock(device: torch.device | str, clock: Clock = time.perf_counter) -> Clock:
    """``clock``, read only after ``device`` has finished its queued work (CUDA runs kernels asynchronously)."""
    device = torch.device(device)
    if device.type != "cuda":
        return clock

    def synchronized() -> float:
        torch.cuda.synchronize(device)
        return clock()

    return synchronized


def measure_peak(
    dtype: torch.dtype = torch.float32,
    size: int | None = None,
    reps: int = 4,
    rounds: int = 3,
    clock: Clock = time.perf_counter,
    device: torch.device | str = "cpu",
) -> float:
    """Best FLOP/s over ``rounds`` of ``reps`` back-to-back ``size``-square matmuls (after one untimed one) on
    ``device``; ``size`` None is :data:`PEAK_SIZE` of the device's kind."""
    device = torch.device(device)
    size = size or PEAK_SIZE.get(device.type, PEAK_SIZE["cpu"])
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    read = device_clock(device, clock)
    out = torch.mm(a, b)  # warm-up: thread pool, BLAS buffers, cuBLAS handles
    best = 0.0
    for _ in range(rounds):
        start = read()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        elapsed = read() - start
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
def machine_peak(dtype: torch.dtype, threads: int, device: str = "cpu") -> float:
    """:func:`measure_peak` once per process, dtype, thread count and device (a run's summary asks for it)."""
    return measure_peak(dtype, device=device)
