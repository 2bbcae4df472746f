"""What a benchmark ran on: the numbers mean little without the device, its vector units and the threads.

The flags listed are the ones that decide CPU speed for these models: AVX2 / AVX-512 for fp32, and
AVX512-BF16 / AMX for bf16 (without them bf16 is emulated and the run stays fp32; see resnets.device).
On a GPU the GPU is named first (model, memory, compute capability, CUDA and cuDNN versions); the CPU
still feeds it, so it is described too.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from resnets.device import Precision

RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> tuple[str | None, list[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; (None, []) where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, []
    model, flags = None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
    return model, flags


def describe_gpu(device: torch.device) -> dict[str, Any] | None:
    """The GPU that ``device`` names, or None for the CPU."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "index": index,
        "memory_bytes": props.total_memory,
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "count": torch.cuda.device_count(),
    }


def describe_machine(precision: Precision) -> dict[str, Any]:
    model, flags = _cpuinfo()
    try:
        import torchvision

        torchvision_version: str | None = torchvision.__version__
    except ImportError:
        torchvision_version = None
    return {
        "device": str(precision.device),
        "gpu": describe_gpu(precision.device),
        "cpu": model or platform.processor() or platform.machine(),
        "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "precision": {
            "amp": precision.amp,
            "dtype": str(precision.dtype).removeprefix("torch.") if precision.amp else "float32",
            "channels_last": precision.channels_last,
        },
        "cxx_compiler": shutil.which("g++"),
        "platform": platform.platform(),
    }


def summary_line(machine: dict[str, Any]) -> str:
    """One line for the top of the printed table."""
    flags = ", ".join(name for name, present in machine["flags"].items() if present) or "none of note"
    p = machine["precision"]
    threads = f"{machine['threads']} thread{'s' if machine['threads'] != 1 else ''}"
    layout = "channels_last" if p["channels_last"] else "NCHW"
    cpu = f"{machine['cpu']} ({machine['usable_cores']} usable cores; {flags})"
    gpu = machine.get("gpu")
    if gpu:
        where = (
            f"{gpu['name']} ({gpu['memory_bytes'] / 2**30:.0f} GiB, compute capability {gpu['capability']}, "
            f"CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}) on {cpu}"
        )
    else:
        where = cpu
    return f"{where}, torch {machine['torch']}, {threads}, {p['dtype']} {layout}"
