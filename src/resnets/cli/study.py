"""``resnets study NAME``: run one instrument and write NAME.json, its figures and NAME.md."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace

from resnets.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from resnets.studies import STUDIES

    listing = "\n".join(f"  {name:<10} {text}" for name, (_, text) in STUDIES.items())
    parser = subparsers.add_parser(
        "study",
        help="measure why residual learning works: " + ", ".join(STUDIES),
        description="Run one instrument on registered models or trained runs. It writes OUT/NAME.json (every "
        "number with its settings), PNG figures and OUT/NAME.md (the claim, the numbers, a verdict). Without "
        "--run, instruments that need trained nets train short runs into OUT/runs once and reuse them.\n\n"
        "instruments:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", choices=list(STUDIES), help="the instrument: " + ", ".join(STUDIES))
    parser.add_argument("--model", action="append", default=[], metavar="NAME", help="a registered model (repeatable)")
    parser.add_argument("--run", action="append", default=[], metavar="RUN_DIR", help="a trained run (repeatable)")
    parser.add_argument("--data", help="data set for default runs and measurements (default: fashion-mnist)")
    parser.add_argument("--data-dir", help="where the named data set lives")
    parser.add_argument("--depths", type=_ints, help="depth sweep in weighted layers, e.g. 20,56,110")
    parser.add_argument("--seeds", type=int, default=3, help="repetitions for mean and spread (default: 3)")
    parser.add_argument("--samples", type=int, help="images or points measured per evaluation")
    parser.add_argument("--steps", type=int, help="training steps of the default runs")
    parser.add_argument("--out", default="studies", help="output directory (default: studies)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 20,56,110, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 20,56,110, got {text!r}")
    return values


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this study, from the parsed options (so tests and shells agree)."""
    parts = ["resnets", "study", args.name]
    for flag, values in (("--model", args.model), ("--run", args.run)):
        for value in values:
            parts += [flag, value]
    for flag, value in (
        ("--data", args.data),
        ("--data-dir", args.data_dir),
        ("--samples", args.samples),
        ("--steps", args.steps),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.depths:
        parts += ["--depths", ",".join(map(str, args.depths))]
    parts += ["--seeds", str(args.seeds), "--out", args.out]
    if args.device != "cpu":
        parts += ["--device", args.device]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from resnets.device import resolve_device
    from resnets.studies import get_study
    from resnets.studies.common import StudyOptions, write_study

    if args.seeds < 1 or (args.samples is not None and args.samples < 1) or (args.steps is not None and args.steps < 1):
        raise ConfigError("--seeds, --samples and --steps must be positive")
    resolve_device(args.device)  # one clear line for a missing GPU, before any work
    options = StudyOptions(
        models=tuple(args.model),
        runs=tuple(args.run),
        data=args.data,
        data_dir=args.data_dir,
        depths=args.depths or (),
        seeds=args.seeds,
        samples=args.samples,
        steps=args.steps,
        out=args.out,
        device=args.device,
        quiet=args.quiet,
    )
    result = get_study(args.name).run(options)
    result = replace(result, command=command_line(args))
    paths = write_study(result, options.out)
    print(f"{args.name}: {result.verdict}")
    print(f"wrote {paths['json']}, {paths['md']}" + "".join(f", {p}" for p in result.figures))
    return 0
