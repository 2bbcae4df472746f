"""Flags that several commands share, defined once so that their names, defaults and help agree."""

from __future__ import annotations

import argparse


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile/--no-compile`` for the commands that run the fast inference path (None: decide by job size)."""
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model with frozen weights (3-13 s once, then 10-15%% faster on a CPU); "
        "default: only for jobs big enough to win that back, where a C++ compiler is installed",
    )
