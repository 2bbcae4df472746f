"""``resnets study NAME``: run one instrument and write NAME.json, its figures and NAME.md.

Each instrument's options are flags generated from its ``Options`` dataclass (``resnets.cli.dataclass_flags``,
as ``resnets train`` makes its recipe flags), so ``resnets study NAME --help`` lists that instrument's own
options with their defaults, then the flags every instrument shares (the study's :class:`Context`). The
instrument's parser is built only when it is named. ``resnets study all --out DIR`` runs every instrument on its
defaults into DIR, then writes the report (``resnets report DIR``): the one command that makes the whole report.
Both plan their work first (:mod:`resnets.studies.job`) and print a line with the job's ETA whenever a run or an
instrument starts; ``study all`` ends with its wall time and compute, also written to DIR/study-all.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Any

from resnets.cli.dataclass_flags import add_dataclass_flags, shown_value
from resnets.cli.options import add_threads_flag, use_threads
from resnets.cli.suggest import refuse_unknown
from resnets.errors import ConfigError
from resnets.io import guard

#: What ``study all`` passes on to every instrument that has the setting; the others mean different things to each.
ALL_SHARED = ("seeds", "steps")
ALL_REFUSED = ("--model", "--run", "--depths", "--samples", "--grid")


def register(subparsers: argparse._SubParsersAction) -> None:
    from resnets.studies import STUDIES

    listing = "\n".join(f"  {name:<11} {text}" for name, text in STUDIES.items())
    parser = subparsers.add_parser(
        "study",
        help="measure why residual learning works: " + ", ".join(STUDIES),
        description="Run one instrument on registered models or trained runs. It writes OUT/NAME.json (every "
        "number with its settings, the checks and thresholds behind the verdict), PNG figures and OUT/NAME.md "
        "(the claim, a verdict: supported, not supported or undecided, the numbers). Without --run, instruments "
        "that need trained nets train their default runs into OUT/runs once and reuse them.\n\n"
        "instruments (resnets study NAME --help lists NAME's options and defaults):\n"
        + listing
        + "\n  all         every instrument in turn on its defaults, then the report (resnets report OUT)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s NAME [options]   (resnets study NAME --help: NAME's options)",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help, or NAME's options, and exit")
    parser.add_argument("name", nargs="?", metavar="NAME", help="the instrument, or all")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=run, study_parser=parser)


def instrument_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``resnets study NAME``: NAME's options, then the shared ones, each with its default."""
    from resnets.studies import STUDIES, Context, get_study
    from resnets.studies.plans import defaults_text

    parser = argparse.ArgumentParser(
        prog=f"resnets study {name}",
        description=(
            f"{get_study(name).CLAIM}\n\nWrites OUT/{name}.json, OUT/{name}.md and its figures."
            if name != "all"
            else f"Every instrument in turn ({', '.join(STUDIES)}) on its own defaults, then the report."
        ),
        argument_default=argparse.SUPPRESS,
    )
    if name == "all":
        group = parser.add_argument_group("passed to every instrument that has them")
        group.add_argument("--seeds", type=int, help="repetitions for mean and spread (default: each instrument's)")
        group.add_argument("--steps", type=int, help="steps of the default runs (default: each instrument's)")
        for flag in ALL_REFUSED:
            parser.add_argument(flag, action="append", dest="refused", help=argparse.SUPPRESS)
    else:
        options = get_study(name).Options
        group = parser.add_argument_group(f"{name} options")
        shown = defaults_text(name)
        for key, (action, text) in add_dataclass_flags(group, options).items():
            field = next(f for f in dataclasses.fields(options) if f.name == key)
            default = shown.get(key) if field.default in ((), None) and key in shown else _shown(field, field.default)
            action.help = f"{text} (default: {default})"
    shared = parser.add_argument_group("every instrument")
    for key, (action, text) in add_dataclass_flags(shared, Context).items():
        field = next(f for f in dataclasses.fields(Context) if f.name == key)
        action.help = f"{text} (default: {_shown(field, field.default)})"
    add_threads_flag(shared)  # how this command computes, not what: left out of the reproducing command
    return parser


def _shown(field: dataclasses.Field, value: Any) -> str:
    """A value as its flag takes it (comma-joined where the flag reads commas), or what it stands for."""
    if "shown" in field.metadata:
        return field.metadata["shown"]
    if isinstance(value, tuple) and field.metadata.get("sep"):
        return field.metadata["sep"].join(map(str, value)) or "none"
    return shown_value(value)


def command_line(name: str, options: Any, context: Any) -> str:
    """The command that reproduces this study: every option and shared setting that differs from its default."""
    parts = ["resnets", "study", name]
    for obj in (options, context):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if value == field.default or field.name == "quiet":
                continue
            flag = (field.metadata.get("flags") or ("--" + field.name.replace("_", "-"),))[0]
            if isinstance(value, bool):
                parts.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, tuple) and field.metadata.get("repeat"):
                for item in value:
                    parts += [flag, str(item)]
            elif isinstance(value, tuple):
                sep = field.metadata.get("sep")
                parts += [flag, sep.join(map(str, value))] if sep else [flag, *map(str, value)]
            else:
                parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    import torch

    from resnets.device import resolve_device
    from resnets.studies import STUDIES, Context, get_study
    from resnets.studies.job import Job, initial_rate, plan, running, write_job_record

    if args.name is None:
        args.study_parser.print_help()
        if args.help:
            args.study_parser.exit()  # as argparse's own --help: SystemExit(0), like every other command
        raise ConfigError("name an instrument (" + ", ".join(STUDIES) + ") or all; resnets study --help lists them")
    if args.name != "all":
        get_study(args.name)  # an unknown name is one line, before any parsing
    parser = instrument_parser(args.name)
    known, extras = parser.parse_known_args([*args.arguments, *(["--help"] if args.help else [])])
    refuse_unknown(parser, extras)  # the instrument's usage, and the flag most likely meant
    given = vars(known)
    use_threads(given.pop("threads", None))
    if given.get("refused"):
        raise ConfigError(
            "`resnets study all` runs every instrument on its own defaults; --model, --run, --depths, --samples and "
            "--grid mean different things to each, so give them to one instrument at a time"
        )
    shared = {f.name for f in dataclasses.fields(Context)}
    context = Context(**{k: v for k, v in given.items() if k in shared})
    guard.check_folder(context.out)  # a link inside a run, or a run's own folder, is refused before any work
    resolve_device(context.device)  # one clear line for a missing GPU, before any work
    names = list(STUDIES) if args.name == "all" else [args.name]
    chosen = {}
    for name in names:
        fields = {f.name for f in dataclasses.fields(get_study(name).Options)}
        chosen[name] = get_study(name).Options(**{k: v for k, v in given.items() if k in fields})
    job = Job(
        plan(names, chosen, context),
        title=f"study {args.name}",
        quiet=context.quiet,
        rate=initial_rate(context.device, torch.get_num_threads()),
    )
    with running(job):
        for name in names:
            _study(name, chosen[name], context)
    if args.name == "all":
        from resnets.studies.report import write_report

        record = write_job_record(job, context, shlex.join(["resnets", "study", "all", *args.arguments]))
        print(record["line"])
        report = write_report(context.out)
        print(f"wrote {report.html}, {report.markdown}")
    return 0


def _study(name: str, options: Any, context: Any) -> None:
    """Run instrument ``name``, write its files and print its verdict."""
    from resnets.studies import run_study

    saved = run_study(name, options, context, command=command_line(name, options, context))
    print(f"{name}: {saved.verdict.text}")
    print(f"wrote {saved.json}, {saved.markdown}" + "".join(f", {p}" for p in saved.figures))
