"""Where and how fast to run: the device, mixed precision and memory format.

bf16 autocast is used only where the hardware computes in bf16 natively (CUDA with bf16, or a CPU with
AVX512-BF16 / AMX); elsewhere (AVX2, or AVX-512 without its BF16 extension) bf16 is emulated and slower
(a bf16 matmul ran at a fifth of fp32's rate on an AVX512F Xeon), so the run stays fp32. Master weights are always fp32: autocast casts per op, the optimiser updates fp32 tensors.

``RESNETS_NATIVE_BF16`` overrides what the CPU says: ``1`` answers "this CPU has native bf16" (bf16 is then
emulated where it is not: slower, numerically the same), ``0`` answers "it has not", ``auto`` (or unset) asks
the CPU. So one machine can play either kind of CPU, and the test suite pins ``0`` unless told otherwise.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from resnets.errors import ConfigError

#: The environment variable that decides :func:`cpu_has_native_bf16` instead of the CPU (see the module docstring).
NATIVE_BF16_VARIABLE = "RESNETS_NATIVE_BF16"
_ANSWERS = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    amp: bool  # autocast on
    dtype: torch.dtype  # autocast dtype (bf16, or fp16 with a grad scaler on old GPUs)
    channels_last: bool
    reason: str = field(default="", compare=False)  # why this precision, for the run's banner ("" if not known)

    @property
    def mode(self) -> str:
        """What the forward pass computes in: "fp32", "bf16 autocast" or "fp16 autocast"."""
        if not self.amp:
            return "fp32"
        return "bf16 autocast" if self.dtype == torch.bfloat16 else "fp16 autocast"

    def describe(self) -> str:
        """The mode and why, e.g. "fp32: this CPU has no native bf16 (no AVX512-BF16/AMX)"."""
        return f"{self.mode}: {self.reason}" if self.reason else self.mode

    def autocast(self) -> AbstractContextManager:
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def needs_scaler(self) -> bool:
        return self.amp and self.dtype == torch.float16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use cpu or cuda")
    return device


def native_bf16_forced() -> bool | None:
    """What ``RESNETS_NATIVE_BF16`` says (True, False), or None where it is unset or ``auto``."""
    value = os.environ.get(NATIVE_BF16_VARIABLE, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in _ANSWERS:
        raise ConfigError(
            f"{NATIVE_BF16_VARIABLE}={os.environ[NATIVE_BF16_VARIABLE]!r} is not understood; expected 1 (play a CPU "
            "with native bf16), 0 (play one without) or auto (ask the CPU)"
        )
    return _ANSWERS[value]


def cpu_has_native_bf16() -> bool:
    """Whether bf16 autocast is the fast precision on this CPU: ``RESNETS_NATIVE_BF16`` where it is set, else
    the CPU's own flags (:func:`cpu_flags_have_bf16`)."""
    return cpu_bf16_decision()[0]


def cpu_bf16_decision() -> tuple[bool, str]:
    """(native bf16?, why), the why as a banner shows it: the CPU's flags, or the switch that overrode them."""
    forced = native_bf16_forced()
    if forced is not None:
        kind = "with" if forced else "without"
        return forced, f"{NATIVE_BF16_VARIABLE}={os.environ[NATIVE_BF16_VARIABLE]} plays a CPU {kind} native bf16"
    if cpu_flags_have_bf16():
        return True, "this CPU has native bf16 (AVX512-BF16/AMX)"
    return False, "this CPU has no native bf16 (no AVX512-BF16/AMX)"


def cpu_flags_have_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU flags, and oneDNN able to use them."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    try:
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, amp: bool | None, channels_last: bool | None) -> Precision:
    """Fill the "auto" (None) choices: fast where the hardware supports it, exact fp32 NCHW elsewhere.

    ``reason`` says why the precision is what it is, so a user can tell a forced choice from a hardware one.
    """
    if device.type == "cuda":
        fast = True
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        hardware = "CUDA with bf16" if dtype == torch.bfloat16 else "CUDA without bf16 (fp16 with a grad scaler)"
    else:
        fast, hardware = cpu_bf16_decision()
        dtype = torch.bfloat16
    if amp is None:
        reason = hardware
    elif amp:
        reason = f"amp=true; {hardware}" if fast else f"amp=true, though {hardware}: emulated, slower than fp32"
    else:
        reason = "--no-amp (amp=false)"
    return Precision(
        device=device,
        amp=fast if amp is None else amp,
        dtype=dtype,
        # channels_last measured 15-20% faster for resnet20 training on an AVX2 CPU too (resnets bench).
        channels_last=True if channels_last is None else channels_last,
        reason=reason,
    )
