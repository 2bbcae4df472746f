"""Inference cases: eager fp32 NCHW (what a user writes first) against ``optimize_for_inference``.

Each choice is measured on its own: the baseline; ours folded (conv-BN folding, channels_last, bf16
autocast where the device has it) in eager mode; and the same compiled with torch.compile (skipped with a
note where it cannot build kernels: no C++ compiler on the CPU, no Triton on CUDA). All three run
alternately in the same rounds, on one device, timed on a clock that waits for it. Compilation is a one-off
cost, reported apart from the rate. Ours carries the baseline's weights, so the outputs must agree; the
largest logit difference is recorded as a check that the speed did not cost correctness.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from resnets import create_model
from resnets.bench.baselines import reference_model
from resnets.bench.cases import Case
from resnets.bench.results import Row, skipped
from resnets.bench.timing import Clock, alternate, median, rate
from resnets.compute import device_clock, peak_share
from resnets.device import Precision


@dataclass(frozen=True)
class InferencePlan:
    batch: int
    steps: int  # timed forward passes per round
    rounds: int
    warmup: int  # untimed forward passes of each variant first
    compile: bool  # also time the torch.compile variant


def forward_rate(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int, clock: Clock) -> float:
    """Images per second of ``steps`` forward passes of the batch ``x``."""

    def work() -> int:
        with torch.no_grad():
            for _ in range(steps):
                model(x)
        return steps * x.shape[0]

    return rate(work, clock)


def compile_skip_reason(wanted: bool, device: torch.device | None = None) -> str | None:
    """Why the compiled variant is not measured on ``device`` (the CPU for None), or None when it is."""
    from resnets.inference import compiler_available
    from resnets.train.compiling import has_triton

    if not wanted:
        return "compilation off (--no-compile)"
    if device is not None and device.type == "cuda":
        return None if has_triton() else "Triton cannot be imported, which torch.compile needs on CUDA"
    if not compiler_available():
        return "no C++ compiler (g++) on PATH, which torch.compile needs on CPU"
    return None


def _ours(case: Case, reference: nn.Module) -> nn.Module:
    """Our model with the reference's weights (torchvision's keys are ours), so both compute the same function."""
    model = create_model(case.model, num_classes=case.classes)
    model.load_state_dict(reference.state_dict())
    return model.eval()


def run_inference(
    case: Case,
    plan: InferencePlan,
    peaks: dict[str, float],
    macs: int,
    precision: Precision,
    clock: Clock = time.perf_counter,
) -> list[Row]:
    from resnets.inference import agreement, optimize_for_inference  # the library's own, not a copy of them

    device = precision.device
    clock = device_clock(device, clock)
    torch.manual_seed(0)
    reference, what = reference_model(case.model, case.classes)
    reference.to(device).eval()
    x = torch.randn(plan.batch, *case.input_size, generator=torch.Generator().manual_seed(0)).to(device)
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"baseline": reference}
    applied: dict[str, list[str]] = {}
    compile_s = math.nan
    variants["folded"] = optimize_for_inference(
        _ours(case, reference).to(device), x, precision=precision, compile=False
    )
    why_not = compile_skip_reason(plan.compile, device)
    if why_not is None:
        start = clock()
        try:
            # optimize_for_inference compiles on its first call, before it returns: all of it is the one-off cost
            compiled = optimize_for_inference(_ours(case, reference).to(device), x, precision=precision, compile=True)
        except Exception as error:  # noqa: BLE001 - an inductor failure is a finding to report; keep the other rows
            why_not = f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        else:
            compile_s = clock() - start
            variants["compiled"] = compiled
    for name, model in variants.items():
        applied[name] = list(getattr(model, "applied", []))
        if plan.warmup:
            forward_rate(model, x, plan.warmup, clock)
    timed = {name: (lambda m=m: forward_rate(m, x, plan.steps, clock)) for name, m in variants.items()}
    rates = alternate(timed, plan.rounds)
    base = median(rates["baseline"])
    flops = case.flop_factor * macs
    ours_dtype = str(precision.dtype).removeprefix("torch.") if precision.amp else "float32"
    common = {
        "batch": plan.batch,
        "steps_per_round": plan.steps,
        "rounds": plan.rounds,
        "warmup_passes": plan.warmup,
        "baseline_model": what,
        "baseline_rates": rates["baseline"],
        "macs_per_image": macs,
        "flops_per_image": flops,
        "baseline_peak_fraction": peak_share(flops, base, peaks["float32"]),
        "device": str(device),
    }
    rows = []
    for name in ("folded", "compiled"):
        if name not in variants:
            rows.append(skipped(case.name, name, "images/s", why_not or "", baseline=base, **common))
            continue
        ours = median(rates[name])
        diff = agreement(reference, variants[name], x).max_abs_diff
        notes = f"batch {plan.batch}; applied: {', '.join(applied[name]) or 'nothing'}; max |logit diff| {diff:.2g}"
        if plan.batch == 1:
            notes += f"; latency {1e3 / base:.1f} -> {1e3 / ours:.1f} ms"
        details = {**common, "ours_rates": rates[name], "applied": applied[name], "max_abs_logit_diff": diff}
        if name == "compiled":
            notes += f"; compile {compile_s:.1f} s (one-off)"
            details["compile_s"] = compile_s
        share = peak_share(flops, ours, peaks.get(ours_dtype, peaks["float32"]))
        rows.append(Row(case.name, name, "images/s", base, ours, share, notes, details))
    return rows
