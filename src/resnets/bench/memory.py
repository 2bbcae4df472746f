"""Peak training memory with and without activation checkpointing, each variant in a fresh process.

A process's peak RSS only grows, so the two variants cannot share one: each runs as
``python -m resnets.bench.memory``, which builds the model, the batch and the optimiser, reads its RSS,
takes one training step (no warm-up: the first step is the one that allocates), and reports the growth of
its peak RSS (VmHWM, reset just before the step; ``ru_maxrss`` where /proc is missing) over that reading;
then it times a few more steps. Before starting a child
the parent estimates its need from the bytes autograd saves for backward on a small batch, scaled to the
full batch, and skips the variant with a note rather than be killed by the kernel's OOM killer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import resnets
from resnets import create_model
from resnets.bench.cases import Case
from resnets.bench.results import NAN, Row
from resnets.compute import peak_share
from resnets.models.profile import count_macs

MB = 2**20
HEADROOM = 0.9  # share of MemAvailable a variant may be estimated to need
PROBE_BATCH = 2  # the small batch whose saved tensors are measured and scaled up


@dataclass(frozen=True)
class MemoryPlan:
    batch: int
    steps: int  # timed steps after the measured one
    threads: int


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo: what can be allocated without swapping; None where unknown."""
    return _meminfo("/proc/meminfo", "MemAvailable")


def _meminfo(path: str, field: str) -> int | None:
    """A ``Field:  N kB`` line of a /proc file, in bytes; None where the file or the field is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _status(field: str) -> int | None:
    """VmRSS (resident now) or VmHWM (its high-water mark) of this process, in bytes; None without /proc."""
    return _meminfo("/proc/self/status", field)


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> tuple[int, str]:
    """(peak resident bytes, where it was read).

    VmHWM first: ``ru_maxrss`` survives fork and exec, so a child started by a large parent reports the
    parent's peak until it exceeds it (seen here: four children all reporting the parent's 1.7 GB).
    """
    hwm = _status("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"  # Linux: kilobytes; macOS: bytes


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of activations autograd keeps for backward in one forward pass (parameters and repeats excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def estimate_need(model: torch.nn.Module, case: Case, batch: int) -> int:
    """Bytes one training step at ``batch`` needs: saved activations scaled from PROBE_BATCH, and 4x the weights.

    Weights, gradients and momentum are three copies of the parameters; the fourth covers the temporaries of
    backward. The activation term is linear in the batch; the 1.25 covers the gradients flowing back.
    """
    model.train()
    x = torch.randn(PROBE_BATCH, *case.input_size)
    per_image = saved_bytes(model, x) / PROBE_BATCH
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(1.25 * per_image * batch + 4 * weights + 2 * x[0].nbytes * batch)


#: glibc raises its mmap threshold as large blocks are freed, and then serves activations from a heap that it
#: does not give back: the RSS high-water mark counts freed, fragmented memory. Pinning the threshold maps
#: and unmaps every block of 64 KiB or more, so RSS follows the live tensors (at ~2x the step time, so
#: steps are not timed this way). The allocator-independent figure, as a GPU's max_memory_allocated is.
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def child_command(case: Case, plan: MemoryPlan, checkpointing: bool, steps: int | None = None) -> list[str]:
    steps = plan.steps if steps is None else steps
    command = [sys.executable, "-m", "resnets.bench.memory", case.model, "--batch", str(plan.batch)]
    command += ["--classes", str(case.classes), "--size", str(case.image_size), "--steps", str(steps)]
    command += ["--threads", str(plan.threads)] + (["--checkpointing"] if checkpointing else [])
    return command


def measure(case: Case, plan: MemoryPlan, checkpointing: bool, pinned: bool = False) -> dict[str, Any]:
    """Run one variant in a fresh process; its report, or {"error": why}.

    ``pinned`` runs it with :data:`PINNED_MALLOC` and measures only the first step's memory.
    """
    env = dict(os.environ) | (PINNED_MALLOC if pinned else {})
    source = str(Path(resnets.__file__).resolve().parents[1])  # the child imports the same package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    command = child_command(case, plan, checkpointing, steps=0 if pinned else None)
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        if done.returncode in (-9, 137):
            return {"error": "the process was killed (SIGKILL: out of memory?); lower --memory-batch"}
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the process failed with status {done.returncode}: {last[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(case: Case, plan: MemoryPlan, peaks: dict[str, float]) -> list[Row]:
    torch.manual_seed(0)
    model = create_model(case.model, num_classes=case.classes)
    macs = count_macs(model, case.input_size)  # on the CPU model: building ResNet-1202 on meta is slower here
    available = available_bytes()
    reports: dict[str, dict[str, Any]] = {}
    for name, checkpointing in (("baseline", False), ("ours", True)):
        if checkpointing and not hasattr(model, "set_grad_checkpointing"):
            reports[name] = {"error": f"{case.model} has no set_grad_checkpointing()"}
            continue
        if checkpointing:
            model.set_grad_checkpointing(True)
        need = estimate_need(model, case, plan.batch)
        if available is not None and need > HEADROOM * available:
            reports[name] = {
                "error": f"needs ~{need / 2**30:.1f} GiB by estimate, {available / 2**30:.1f} GiB available; "
                "lower --memory-batch",
                "estimate_bytes": need,
            }
            continue
        report = measure(case, plan, checkpointing)
        if "error" not in report:
            live = measure(case, plan, checkpointing, pinned=True)
            report["live_peak_bytes"] = live.get("peak_bytes", NAN)
        reports[name] = {**report, "estimate_bytes": need}
    del model
    return _rows(case, plan, peaks, macs, reports, available)


def _rows(
    case: Case,
    plan: MemoryPlan,
    peaks: dict[str, float],
    macs: int,
    reports: dict[str, dict[str, Any]],
    available: int | None,
) -> list[Row]:
    """Two rows: peak memory (ratio: the fraction checkpointing keeps) and step time (ratio: its time cost)."""

    def value(name: str, key: str, scale: float = 1.0) -> float:
        return reports[name][key] / scale if key in reports[name] else NAN

    problems = "; ".join(
        f"{'without' if name == 'baseline' else 'with'} checkpointing: {r['error']}"
        for name, r in reports.items()
        if "error" in r
    )
    flops = case.flop_factor * macs
    details = {
        "batch": plan.batch,
        "macs_per_image": macs,
        "flops_per_image": flops,
        "available_bytes": available,
        "variants": reports,
    }
    base_mb, ours_mb = value("baseline", "peak_bytes", MB), value("ours", "peak_bytes", MB)
    base_live, ours_live = value("baseline", "live_peak_bytes", MB), value("ours", "live_peak_bytes", MB)
    base_s, ours_s = value("baseline", "step_s"), value("ours", "step_s")
    share = peak_share(flops * plan.batch, 1 / ours_s if ours_s > 0 else NAN, peaks["float32"])
    live_notes = [f"batch {plan.batch}; peak RSS growth in the first step with glibc's mmap threshold pinned"]
    memory_notes = [f"batch {plan.batch}; peak RSS growth in the first step, glibc's default allocator"]
    time_notes = [f"batch {plan.batch}; median of {plan.steps} steps after the first"]
    for notes, base, ours in ((live_notes, base_live, ours_live), (memory_notes, base_mb, ours_mb)):
        if base > 0 and ours > 0:
            notes.append(f"checkpointing keeps 1/{base / ours:.1f} of the memory")
    if base_s > 0 and ours_s > 0:
        time_notes.append(f"checkpointing costs {ours_s / base_s:.2f}x the time")
    for notes in (live_notes, memory_notes, time_notes):
        if problems:
            notes.append(problems)
    return [
        Row(
            case.name, "checkpointing memory (tensors)", "MB", base_live, ours_live, NAN, "; ".join(live_notes), details
        ),
        Row(case.name, "checkpointing memory (RSS)", "MB", base_mb, ours_mb, NAN, "; ".join(memory_notes), details),
        Row(case.name, "checkpointing time", "s/step", base_s, ours_s, share, "; ".join(time_notes), details),
    ]


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def child(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The measurement inside a fresh process; returns the report that is printed as one JSON line."""
    parser = argparse.ArgumentParser(description="one variant of a memory benchmark case (run by resnets bench)")
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the measured one")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.classes).train()
    if args.checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            return {"error": f"{args.model} has no set_grad_checkpointing()"}
        model.set_grad_checkpointing(True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    reset = _reset_peak()
    before = _status("VmRSS") or _peak_rss()[0]
    start = time.perf_counter()
    _train_step(model, optimizer, x, y)
    first_s = time.perf_counter() - start
    peak, source = _peak_rss()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        _train_step(model, optimizer, x, y)
        times.append(time.perf_counter() - start)
    return {
        "checkpointing": args.checkpointing,
        "batch": args.batch,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "peak_bytes": peak - before,
        "peak_source": source + (" (reset before the step)" if reset and source == "VmHWM" else ""),
        "first_step_s": first_s,
        "step_times_s": times,
        "step_s": statistics.median(times) if times else first_s,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(child()))
