"""Flags that several commands share, defined once so that their names, defaults and help agree."""

from __future__ import annotations

import argparse

from resnets.errors import ConfigError


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile/--no-compile`` for the commands that run the fast inference path (None: decide by job size)."""
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model with frozen weights (3-13 s once, then 10-15%% faster on a CPU); "
        "default: only for jobs big enough to win that back, where a C++ compiler is installed",
    )


def add_threads_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--threads N``: torch's CPU threads, for every command that computes (checked by :func:`use_threads`, or
    by the run's config for train)."""
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: one per core; fewer keep a shared machine's other cores free)",
    )


def use_threads(count: int | None) -> None:
    """Apply ``--threads`` (None: torch's default), checked by the rule a run's config checks it with."""
    if count is None:
        return
    from resnets.train.config import RUN_RULES

    test, expected = RUN_RULES["threads"]
    if not test(count):
        raise ConfigError(f"--threads must be {expected.removesuffix(', or null')}, got {count}")
    import torch

    torch.set_num_threads(count)
