"""Training cases: the baseline loop against the training engine's own step on its own loader.

Ours is ``Trainer.benchmark_steps``: the real loop of ``resnets train`` (BatchLoader with batched
augmentation, the precision and memory format the device gets, the case's recipe: its optimiser groups,
schedule and per-step extras such as the speedrun's lookahead), timed on the CPU on the clock that writes
images/s to metrics.csv, so the benchmark and a training log agree; and, where torch.compile can build
kernels (a C++ compiler on the CPU, Triton on CUDA), the same engine with ``--compile`` (its compilation
timed apart). On a GPU both sides are timed on a clock that waits for the device at both ends: the engine
reads its clock as it queues kernels, which would leave the last steps' work out.
Both sides see the same synthetic uint8 images, the same augmentation (the recipe's pad-and-crop for CIFAR
shapes, flips only at 224) and the same batch; nothing is downloaded. The baseline's per-sample DataLoader
runs on the CPU and each batch is moved to the device, as the tutorials do.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from resnets.bench.baselines import MEAN, STD, EagerTraining, PerSampleDataset, reference_model
from resnets.bench.cases import Case
from resnets.bench.inference import compile_skip_reason
from resnets.bench.results import Row, skipped
from resnets.bench.timing import Clock, alternate, median, rate
from resnets.compute import device_clock, peak_share

LR = 0.01  # small, so that random labels never make a long run diverge; the rate does not depend on it


@dataclass(frozen=True)
class TrainingPlan:
    batch: int
    steps: int  # timed steps per round
    rounds: int
    warmup: int  # untimed steps of each side first
    threads: int | None
    compile: bool = False  # also time the engine with --compile (torch.compile of the training model)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.rounds * self.steps


def synthetic_bundle(case: Case, samples: int, seed: int = 0) -> Any:
    """A DataBundle of random uint8 images and labels with the case's shapes."""
    from resnets.data import ArrayDataset, DataBundle

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (samples, *case.input_size), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, case.classes, (samples,), generator=generator)
    classes = [str(i) for i in range(case.classes)]
    return DataBundle("synthetic", "image", classes, ArrayDataset(images, targets), None, None, MEAN, STD, True)


def crop_padding(case: Case) -> int:
    """He et al. (2015) pad 4 and crop at 32x32; at 224 the tutorials' pipeline is flips (and resizing)."""
    return 4 if case.image_size <= 64 else 0


def bench_recipe(case: Case, plan: TrainingPlan) -> Any:
    """The case's recipe at the plan's batch and length, with a small lr (random labels must not diverge; the
    rate does not depend on it). The default recipe crops as :func:`crop_padding` says; a named one as it
    says. A lookahead starts at once, so that the timed steps carry its cost."""
    from resnets.train.recipes import get_recipe

    recipe = get_recipe(case.recipe)
    pad = crop_padding(case) if case.recipe == "default" else recipe.crop_padding
    changes: dict[str, Any] = {"lookahead_start_epochs": 0.0} if recipe.lookahead_every else {}
    return replace(
        recipe,
        batch_size=plan.batch,
        lr=LR,
        epochs=None,
        max_steps=plan.total_steps + 1,
        crop_padding=pad,
        augment=True,
        **changes,
    )


def build_trainer(
    case: Case, plan: TrainingPlan, bundle: Any, out: str, device: torch.device, compile: bool = False
) -> Any:
    """The engine's Trainer for this case on ``device``, writing its (small) run files into ``out``."""
    from resnets.train.config import TrainConfig
    from resnets.train.engine import Trainer

    config = TrainConfig(
        model=case.model,
        data="synthetic",
        device=str(device),
        threads=plan.threads,
        out=out,
        quiet=True,
        compile=compile,
    )
    return Trainer(replace(config, recipe=bench_recipe(case, plan)), bundle, resume=False)


def engine_rate(trainer: Any, steps: int, batch: int, device: torch.device, clock: Clock = time.perf_counter) -> float:
    """Images/s of ``steps`` steps of the engine's loop: on the CPU its own clock (metrics.csv's); on a GPU
    ``clock``, read after the device has finished its work, before the first step and after the last."""
    if device.type == "cpu":
        return trainer.benchmark_steps(steps)

    def work() -> int:
        trainer.benchmark_steps(steps)
        return steps * batch  # every step is a full batch: the synthetic set holds the whole run in one epoch

    return rate(work, device_clock(device, clock))


def run_training(
    case: Case, plan: TrainingPlan, peaks: dict[str, float], macs: int, device: torch.device | None = None
) -> list[Row]:
    device = device or torch.device("cpu")
    # Enough samples that every step of the run falls in one epoch: no epoch-end work inside the timing.
    bundle = synthetic_bundle(case, plan.batch * (plan.total_steps + 1))
    generator = torch.Generator().manual_seed(1)
    pad = bench_recipe(case, plan).crop_padding
    dataset = PerSampleDataset(bundle.train.inputs, bundle.train.targets, pad, generator)
    loader = DataLoader(dataset, batch_size=plan.batch, shuffle=True, drop_last=True, num_workers=0)
    torch.manual_seed(0)
    reference, what = reference_model(case.model, case.classes)
    baseline, clock = EagerTraining(reference, loader, LR, device), device_clock(device)
    with tempfile.TemporaryDirectory(prefix="resnets-bench-") as out:
        trainer = build_trainer(case, plan, bundle, f"{out}/eager", device)
        contenders = {
            "baseline": lambda: baseline.rate(plan.steps, clock),
            "ours": lambda: engine_rate(trainer, plan.steps, plan.batch, device),
        }
        why_not, compile_s = compile_skip_reason(plan.compile, device), math.nan
        if why_not is None:
            compiled = build_trainer(case, plan, bundle, f"{out}/compiled", device, compile=True)
            start = clock()
            compiled.benchmark_steps(max(plan.warmup, 1))  # compiles: the one-off cost
            compile_s = clock() - start
            contenders["compiled"] = lambda: engine_rate(compiled, plan.steps, plan.batch, device)
        if plan.warmup:
            baseline.steps(plan.warmup)
            trainer.benchmark_steps(plan.warmup)
        rates = alternate(contenders, plan.rounds)
        precision = trainer.precision
    ours_dtype = str(precision.dtype).removeprefix("torch.") if precision.amp else "float32"
    flops = case.flop_factor * macs
    base, ours = median(rates["baseline"]), median(rates["ours"])
    details = {
        "batch": plan.batch,
        "steps_per_round": plan.steps,
        "rounds": plan.rounds,
        "warmup_steps": plan.warmup,
        "baseline_rates": rates["baseline"],
        "ours_rates": rates["ours"],
        "macs_per_image": macs,
        "flops_per_image": flops,
        "baseline_model": what,
        "baseline_peak_fraction": peak_share(flops, base, peaks["float32"]),
        "ours_dtype": ours_dtype,
        "ours_channels_last": precision.channels_last,
        "recipe": case.recipe,
        "device": str(device),
    }
    layout = "channels_last" if precision.channels_last else "NCHW"
    notes = (
        f"batch {plan.batch}; baseline {what}, per-sample DataLoader; ours {ours_dtype} {layout}, BatchLoader, "
        f"recipe {case.recipe}"
    )
    rows = [
        Row(case.name, "engine", "images/s", base, ours, peak_share(flops, ours, peaks[ours_dtype]), notes, details)
    ]
    if "compiled" in rates:
        fast = median(rates["compiled"])
        details = {**details, "ours_rates": rates["compiled"], "compile_s": compile_s}
        share = peak_share(flops, fast, peaks[ours_dtype])
        rows.append(
            Row(
                case.name,
                "compiled",
                "images/s",
                base,
                fast,
                share,
                f"{notes}, --compile; compile {compile_s:.0f} s (one-off)",
                details,
            )
        )
    else:
        rows.append(skipped(case.name, "compiled", "images/s", why_not or "", baseline=base))
    return rows
