"""``torch.compile`` of the training model, refused up front where it cannot work.

Inductor compiles lazily: a missing compiler would surface only at the first training step, as a long
traceback from deep inside the compiler, after the data has loaded and the run directory exists. On CPU it
builds C++ kernels with the compiler that ``torch._inductor.config.cpp.cxx`` names (g++, or $CXX); on CUDA it
writes Triton kernels. :func:`check_compile` looks for these before the run starts.
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from resnets.errors import ConfigError


def find_cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU, or None where it finds none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # a torch without these helpers: look for what inductor runs by default
        return shutil.which(os.environ.get("CXX", "g++"))
    try:
        return get_cpp_compiler()
    except InvalidCxxCompiler:  # none of the configured compilers answers `--version`
        return None


def has_triton() -> bool:
    """Whether Triton, which inductor writes CUDA kernels in, can be imported."""
    try:
        from torch.utils._triton import has_triton as torch_has_triton
    except ImportError:
        return False
    return bool(torch_has_triton())


def check_compile(device: torch.device) -> None:
    """Raise ConfigError, saying what is missing and what to do, where torch.compile cannot run on ``device``."""
    if device.type == "cpu" and find_cpp_compiler() is None:
        compiler = os.environ.get("CXX", "g++")
        raise ConfigError(
            f"--compile on CPU needs a C++ compiler ({compiler}) to build inductor's kernels, and none was found; "
            "install one (e.g. `apt-get install g++`, or set CXX) or train without --compile "
            "(a resumed run: --no-compile)"
        )
    if device.type == "cuda" and not has_triton():
        raise ConfigError(
            "--compile on CUDA needs Triton to build inductor's kernels, and it cannot be imported; "
            "install it (`pip install triton`) or train without --compile (a resumed run: --no-compile)"
        )


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` after :func:`check_compile`; wrap DDP first, as PyTorch recommends."""
    check_compile(device)
    return torch.compile(model)
