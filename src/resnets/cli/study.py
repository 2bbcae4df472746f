"""``resnets study NAME``: run one instrument and write NAME.json, its figures and NAME.md.

``resnets study all --out DIR`` runs every instrument on its defaults into DIR, then writes the report
(``resnets report DIR``): the one command that makes the whole report.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from typing import TYPE_CHECKING

from resnets.errors import ConfigError

if TYPE_CHECKING:
    from resnets.studies.common import StudyOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    from resnets.studies import PRECISIONS, STUDIES

    listing = "\n".join(f"  {name:<10} {text}" for name, (_, text) in STUDIES.items())
    parser = subparsers.add_parser(
        "study",
        help="measure why residual learning works: " + ", ".join(STUDIES),
        description="Run one instrument on registered models or trained runs. It writes OUT/NAME.json (every "
        "number with its settings), PNG figures and OUT/NAME.md (the claim, the numbers, a verdict). Without "
        "--run, instruments that need trained nets train short runs into OUT/runs once and reuse them.\n\n"
        "instruments:\n" + listing + "\n  all        every instrument in turn on its defaults, then the report "
        "(resnets report OUT)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name", metavar="NAME", choices=[*STUDIES, "all"], help="the instrument (" + ", ".join(STUDIES) + ") or all"
    )
    parser.add_argument("--model", action="append", default=[], metavar="NAME", help="a registered model (repeatable)")
    parser.add_argument("--run", action="append", default=[], metavar="RUN_DIR", help="a trained run (repeatable)")
    parser.add_argument("--data", help="data set for default runs and measurements (default: fashion-mnist)")
    parser.add_argument("--data-dir", help="where the named data set lives")
    parser.add_argument("--depths", type=_ints, help="depth sweep in weighted layers, e.g. 20,56,110")
    parser.add_argument("--seeds", type=int, help="repetitions for mean and spread (default: the instrument's, 3 or 2)")
    parser.add_argument("--samples", type=int, help="images or points measured per evaluation")
    parser.add_argument("--steps", type=int, help="training steps of the default runs")
    parser.add_argument(
        "--budget",
        choices=("cpu", "paper"),
        default="cpu",
        help="training budget of instruments that train: cpu (minutes, the default) or paper (the paper's "
        "schedule, for a GPU)",
    )
    parser.add_argument("--grid", type=int, help="points per axis of a measured grid (landscape)")
    parser.add_argument("--out", default="studies", help="output directory (default: studies)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (the default: the same numbers on every CPU) or fast: bf16 autocast where the device computes "
        "bf16 natively, for the default runs' training and every measurement; the JSON, Markdown and report say "
        "which",
    )
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
        ("--grid", args.grid),
        ("--seeds", args.seeds),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.depths:
        parts += ["--depths", ",".join(map(str, args.depths))]
    if args.budget != "cpu":
        parts += ["--budget", args.budget]
    parts += ["--out", args.out]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.precision != "fp32":
        parts += ["--precision", args.precision]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from resnets.device import resolve_device
    from resnets.studies.common import StudyOptions

    if any(value is not None and value < 1 for value in (args.seeds, args.samples, args.steps, args.grid)):
        raise ConfigError("--seeds, --samples, --steps and --grid must be positive")
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
        budget=args.budget,
        grid=args.grid,
        out=args.out,
        device=args.device,
        quiet=args.quiet,
        precision=args.precision,
    )
    if args.name != "all":
        _study(args.name, args, options)
        return 0
    if args.model or args.run or args.depths or args.samples or args.grid:
        raise ConfigError(
            "`resnets study all` runs every instrument on its own defaults; --model, --run, --depths, --samples and "
            "--grid mean different things to each, so give them to one instrument at a time"
        )
    from resnets.reports.study_report import write_report
    from resnets.studies import STUDIES

    for name in STUDIES:
        _study(name, args, options)
    report = write_report(options.out)
    print(f"wrote {report.html}, {report.markdown}")
    return 0


def _study(name: str, args: argparse.Namespace, options: StudyOptions) -> None:
    """Run instrument ``name``, write its files and print its verdict."""
    from resnets.studies import get_study
    from resnets.studies.common import write_study

    result = get_study(name).run(options)
    command = command_line(argparse.Namespace(**{**vars(args), "name": name}))
    result = replace(result, command=command, precision=options.measuring_precision().mode)
    paths = write_study(result, options.out)
    print(f"{name}: {result.verdict}")
    print(f"wrote {paths['json']}, {paths['md']}" + "".join(f", {p}" for p in result.figures))
