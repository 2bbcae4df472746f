"""The benchmark cases, as data: what is timed, at which batch and input size, for how many steps.

Names read ``KIND/MODEL[-bBATCH]`` so that a glob such as ``train/*`` or ``*resnet50*`` picks a family.
``steps`` is the default number of timed steps per round, chosen so that one round of the slowest cases
takes seconds, not minutes, on a 2-core CPU; ``quick_batch`` is the batch of ``--quick`` smoke runs;
``cuda_batch`` is the batch on a GPU where the CPU's would leave it idle. Memory cases read the process's RSS
and run on the CPU only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from resnets.errors import UnknownNameError

KINDS = ("training", "inference", "memory")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # training | inference | memory
    model: str  # a registered model name
    batch: int  # images per step
    image_size: int  # pixels per side; images are 3 x image_size x image_size
    classes: int
    steps: int  # timed steps per round (training, inference) or per process (memory)
    quick_batch: int  # the batch of --quick runs
    description: str
    recipe: str = "default"  # the training recipe whose step ours runs (training cases)
    cuda_batch: int | None = None  # images per step on a GPU; None: ``batch``

    @property
    def cpu_only(self) -> bool:
        """Whether the case measures something only the CPU has (memory cases read the process's RSS)."""
        return self.kind == "memory"

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def flop_factor(self) -> int:
        """FLOPs per multiply-add of one image: forward 2; forward + backward (two matmuls per forward one) 6."""
        return 2 if self.kind == "inference" else 6


CASES: tuple[Case, ...] = (
    Case("train/resnet20", "training", "resnet20", 128, 32, 10, 10, 8, "resnet20 training step, CIFAR shapes"),
    Case("train/resnet56", "training", "resnet56", 128, 32, 10, 5, 8, "resnet56 training step, CIFAR shapes"),
    Case("train/resnet110", "training", "resnet110", 128, 32, 10, 3, 8, "resnet110 training step, CIFAR shapes"),
    Case("train/resnet50", "training", "resnet50", 32, 224, 1000, 2, 2, "resnet50 training step, ImageNet shapes"),
    Case(
        "train/speedrun",
        "training",
        "speedrun",
        512,
        32,
        10,
        3,
        8,
        "speedrun training step, cifar10-speedrun recipe, CIFAR shapes",
        recipe="cifar10-speedrun",
        cuda_batch=1024,
    ),
    Case("infer/resnet50-b1", "inference", "resnet50", 1, 224, 1000, 20, 1, "resnet50 latency, one image"),
    Case("infer/resnet50-b32", "inference", "resnet50", 32, 224, 1000, 3, 2, "resnet50 throughput, batch 32"),
    Case("infer/resnet56-b256", "inference", "resnet56", 256, 32, 10, 5, 8, "resnet56 throughput, batch 256"),
    Case(
        "infer/speedrun",
        "inference",
        "speedrun",
        512,
        32,
        10,
        3,
        8,
        "speedrun throughput, CIFAR shapes",
        cuda_batch=4096,
    ),
    Case(
        "memory/resnet1202",
        "memory",
        "resnet1202",
        128,
        32,
        10,
        2,
        4,
        "peak training memory, with and without activation checkpointing",
    ),
    Case(
        "memory/preact_resnet1001",
        "memory",
        "preact_resnet1001",
        128,
        32,
        10,
        2,
        4,
        "peak training memory, with and without activation checkpointing",
    ),
)


def case_names() -> list[str]:
    return [case.name for case in CASES]


def select_cases(patterns: Sequence[str] | None) -> list[Case]:
    """The cases named by ``patterns`` (exact names or globs), in table order; all of them for none.

    A pattern that matches nothing is an error naming the valid cases, so a typo never runs an empty suite.
    """
    if not patterns:
        return list(CASES)
    chosen: set[str] = set()
    for pattern in patterns:
        matched = {case.name for case in CASES if fnmatch.fnmatchcase(case.name, pattern)}
        if not matched:
            raise UnknownNameError("benchmark case", pattern, case_names(), hint="globs such as 'train/*' pick several")
        chosen |= matched
    return [case for case in CASES if case.name in chosen]
