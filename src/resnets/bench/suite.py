"""Run the selected cases with one set of settings on one device, after measuring its peak in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from resnets.bench.cases import Case
from resnets.bench.machine import describe_machine
from resnets.bench.results import Row, skipped
from resnets.compute import PEAK_SIZE, measure_peak
from resnets.device import Precision, resolve_device, resolve_precision
from resnets.errors import ConfigError

DEFAULT_ROUNDS = 5


@dataclass(frozen=True)
class Settings:
    rounds: int | None = None  # alternating rounds, every figure the median over them; None: 5 (quick: 1)
    steps: int | None = None  # timed steps per round; None: each case's own
    warmup: int = 1  # untimed steps (training) or passes (inference) of each side first
    quick: bool = False  # smoke-test settings: 1 round, 2 steps, each case's small batch, a small peak matmul
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    compile: bool = True  # also time torch.compile (training: the engine's --compile; inference: with freezing)
    memory_batch: int | None = None  # batch of the memory cases; None: the case's (128, or its quick batch)
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (a GPU where there is one)

    def __post_init__(self) -> None:
        for name in ("rounds", "steps", "threads", "memory_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        resolve_device(self.device)  # an unknown device, or cuda without a GPU, is refused before anything runs

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def effective_rounds(self) -> int:
        return self.rounds or (1 if self.quick else DEFAULT_ROUNDS)

    def steps_for(self, case: Case) -> int:
        return self.steps or (2 if self.quick else case.steps)

    def batch_for(self, case: Case) -> int:
        if case.kind == "memory" and self.memory_batch is not None:
            return self.memory_batch
        if self.quick:
            return case.quick_batch
        return case.cuda_batch if case.cuda_batch and self.torch_device.type == "cuda" else case.batch


@dataclass
class BenchResult:
    machine: dict[str, Any]
    settings: dict[str, Any]
    peaks: dict[str, float]  # FLOP/s by dtype name
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole suite


def _macs(case: Case) -> int:
    from resnets.models.profile import build_meta, count_macs

    return count_macs(build_meta(case.model, num_classes=case.classes), case.input_size)


def run_case(case: Case, settings: Settings, peaks: dict[str, float], precision: Precision) -> list[Row]:
    """The rows of one case on ``precision.device``, the precision a run gets there."""
    if case.cpu_only and precision.device.type != "cpu":
        why = f"CPU-only: it measures the process's RSS, not {precision.device.type} memory; run it with --device cpu"
        return [skipped(case.name, "checkpointing memory", "MB", why)]
    batch, steps, rounds = settings.batch_for(case), settings.steps_for(case), settings.effective_rounds
    warmup = min(settings.warmup, 1) if settings.quick else settings.warmup
    if case.kind == "training":
        from resnets.bench.training import TrainingPlan, run_training

        plan = TrainingPlan(batch, steps, rounds, warmup, settings.threads, settings.compile)
        return run_training(case, plan, peaks, _macs(case), precision.device)
    if case.kind == "inference":
        from resnets.bench.inference import InferencePlan, run_inference

        plan = InferencePlan(batch, steps, rounds, warmup, settings.compile)
        return run_inference(case, plan, peaks, _macs(case), precision)
    from resnets.bench.memory import MemoryPlan, run_memory

    return run_memory(case, MemoryPlan(batch, steps, torch.get_num_threads()), peaks)


def run_suite(cases: list[Case], settings: Settings, log: Callable[[str], None] = print) -> BenchResult:
    """Measure the device's peak, then every case in table order; ``log`` hears a line as each case starts and ends."""
    start = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = settings.torch_device
    precision = resolve_precision(device, None, None)
    size = PEAK_SIZE[device.type] // 2 if settings.quick else None
    peaks = {"float32": measure_peak(torch.float32, size=size, device=device)}
    if precision.amp:
        peaks[str(precision.dtype).removeprefix("torch.")] = measure_peak(precision.dtype, size=size, device=device)
    log("peak: " + ", ".join(f"{dtype} {flops / 1e9:.1f} GFLOP/s" for dtype, flops in peaks.items()))
    result = BenchResult(describe_machine(precision), asdict(settings), peaks)
    for case in cases:
        log(f"{case.name}: {case.description} ...")
        case_start = time.perf_counter()
        rows = run_case(case, settings, peaks, precision)
        result.rows.extend(rows)
        log(f"{case.name}: done in {time.perf_counter() - case_start:.1f} s")
    result.seconds = time.perf_counter() - start
    return result
