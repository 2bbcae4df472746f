"""Shared test settings: deterministic, quiet, and one torch thread per worker when pytest-xdist splits the suite.

``scripts/test.sh`` runs the suite on two xdist workers (``-n 2``): on a 2-core machine two single-threaded
workers beat one two-threaded process, since most tests are small tensors and Python. Two workers that each
start two OpenMP threads would wait on each other, so a worker keeps to one thread, and so do the processes
its tests start (torchrun, CLI subprocesses), through OMP_NUM_THREADS.
"""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
