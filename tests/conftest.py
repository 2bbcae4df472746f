"""Shared test settings: deterministic, quiet, and one torch thread per worker when pytest-xdist splits the suite.

``scripts/test.sh`` runs the suite on two xdist workers (``-n 2``): on a 2-core machine two single-threaded
workers beat one two-threaded process, since most tests are small tensors and Python. Two workers that each
start two OpenMP threads would wait on each other, so a worker keeps to one thread, and so do the processes
its tests start (torchrun, CLI subprocesses), through OMP_NUM_THREADS.

Precision: every test sees the same precision decision on every CPU. ``RESNETS_NATIVE_BF16`` is pinned to 0
(play a CPU without native bf16: training and evaluation in fp32) unless the caller set it, so
``RESNETS_NATIVE_BF16=1 pytest`` runs the suite as a CPU with native bf16 runs it, emulated where it must be.
The processes that tests start inherit it. Tests about the bf16 branch set it themselves (``play_cpu``).
The files whose numbers depend on that decision (those that train, evaluate, predict, export or run torchrun:
:data:`PRECISION_SENSITIVE`) carry the ``precision`` marker, and ``scripts/test.sh`` runs them a second time
as the other kind of CPU; a test of such a file that fixes its own precision (``--no-amp``, or it plays both kinds
of CPU itself) says so with ``@pytest.mark.pinned_precision(reason)`` and runs once.
"""

import os
from pathlib import Path

import matplotlib
import pytest
import torch

from resnets.device import NATIVE_BF16_VARIABLE

matplotlib.use("Agg")
os.environ.setdefault(NATIVE_BF16_VARIABLE, "0")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


#: Test files (relative to tests/) whose numbers depend on the precision decision: they train, evaluate, predict,
#: export or run torchrun and compare what comes out. scripts/test.sh runs them as both kinds of CPU.
PRECISION_SENSITIVE = (
    "runs/test_checkpoint_safety.py",
    "runs/test_evaluation.py",
    "runs/test_export.py",
    "runs/test_exported.py",
    "runs/test_inference.py",
    "runs/test_open_run.py",
    "runs/test_predict.py",
    "train/test_checkpoint.py",
    "train/test_checkpoint_story.py",
    "train/test_cli.py",
    "train/test_conveniences.py",
    "train/test_distributed_equivalence.py",
    "train/test_engine.py",
    "train/test_finetune.py",
    "train/test_short_runs.py",
    "train/test_speedrun_training.py",
    "train/test_train_options.py",
    "train/test_vector_training.py",
)
#: Files of tests/train and tests/runs whose assertions do not depend on it, and why (each file of those two
#: folders is in one list or the other: tests/test_floors.py... see test_every_training_test_file_is_classified).
PRECISION_INDEPENDENT = {
    "runs/test_file_modes.py": "file permissions",
    "runs/test_lifecycle.py": "plays both kinds of CPU itself",
    "runs/test_reliability_safety.py": "inputs refused before any number is computed",
    "runs/test_run_directory_safety.py": "locks and folders",
    "train/test_distributed.py": "how the ranks split each epoch: step counts, not numbers",
    "train/test_distributed_restart.py": "a restart after a crash (bit-exact resume in bf16: test_engine.py, "
    "test_speedrun_training.py; DDP in bf16: test_distributed_equivalence.py)",
    "train/test_distributed_stop.py": "how ranks agree to stop and resume (the same precision cover as the restart)",
    "train/test_recipes.py": "recipe values and their checks",
    "train/test_run_output.py": "the banner and progress text, with the CPU played explicitly",
    "train/test_schedule.py": "the lr curve, a pure function",
    "train/test_tensorboard.py": "which scalars and tags are written",
    "train/test_train_flags.py": "flag parsing",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        sensitive = item.path.relative_to(tests).as_posix() in PRECISION_SENSITIVE
        if sensitive and not item.get_closest_marker("pinned_precision"):
            item.add_marker(pytest.mark.precision)
    # The torchrun files first, then the other files with slow tests: the workers take files in this order, so
    # the longest start early and run side by side, rather than one long file running alone at the end.
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (not item.path.name.startswith("test_distributed"), item.path not in slow))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def play_cpu(monkeypatch: pytest.MonkeyPatch):
    """``play_cpu(native_bf16=True)``: from here on this test plays a CPU with native bf16 (False: without), through
    ``RESNETS_NATIVE_BF16``, the switch that users have too."""

    def play(native_bf16: bool) -> None:
        monkeypatch.setenv(NATIVE_BF16_VARIABLE, "1" if native_bf16 else "0")

    return play
