"""The ``resnets`` command: thin argument parsing over the library, one module per command.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed arguments and returning an exit status. Errors the user can act on
(:class:`resnets.errors.ResnetsError`) are printed as one line, without a traceback, with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from resnets import __version__
from resnets.errors import ResnetsError

#: Command modules under ``resnets.cli``, in the order ``--help`` lists them.
COMMAND_MODULES = ["models", "train", "eval", "predict", "export", "study", "report", "compare", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets",
        description="Residual networks: build, train, evaluate, predict, export, and study them.",
    )
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"resnets.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ResnetsError as error:
        print(f"resnets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
