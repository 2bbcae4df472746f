"""Small helpers shared by tests in several folders."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn


@torch.no_grad()
def randomize_bn(module: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters away from 0/1, in eval mode, so that no BN is the identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    return module.eval()


@functools.cache
def model_size(name: str) -> tuple[int, int]:
    """(parameters, residual units) of a registered model: the tests that put big models under the slow marker
    decide from it at collection time. Counted on the meta device once per process for every model, through the
    package's count cache, so that later processes (the other xdist worker, the second CI pass) read them."""
    from resnets.models import list_models
    from resnets.models.profile import registry_counts

    if name not in _SIZES:  # the first call counts every model registered by then (one cache write)
        _SIZES.update({n: (c.params, c.units) for n, c in registry_counts([*list_models(), name]).items()})
    return _SIZES[name]


_SIZES: dict[str, tuple[int, int]] = {}


def big_twin_marks(name: str, *, params: float, units: int) -> list[pytest.MarkDecorator]:
    """The marks of a registry-wide test's case for model ``name``: slow and big_twin over ``params`` parameters or
    ``units`` residual units (a deeper or wider twin of a model the same test checks at a smaller size, so CI
    leaves it to ``TESTS=all bash scripts/test.sh``), none otherwise."""
    have_params, have_units = model_size(name)
    return [pytest.mark.slow, pytest.mark.big_twin] if have_params > params or have_units > units else []


def torchrun(script: Path, *args: str, processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` on ``script``: the launcher binds its rendezvous store to a port the OS gives it
    and its workers join through that store, so no free port is picked first and bound later by another process
    (the race that a ``--master_port`` chosen by the test had)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += [str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def why(result: subprocess.CompletedProcess) -> str:
    """A failed torchrun's story for an assertion message: every line of stderr that names an error or a signal
    (a worker's own message comes long before the launcher's summary), then the summary."""
    marks = ("error", "terminate", "what()", "abort", "signal", "exception", "enforce")
    lines = [line for line in result.stderr.splitlines() if any(mark in line.lower() for mark in marks)]
    return "\n".join(lines[:40]) + "\n...\n" + result.stderr[-1500:]
