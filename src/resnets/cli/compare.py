"""``resnets compare RUN [RUN...]``: several runs in one table (and, with --out, one figure), to read a sweep."""

from __future__ import annotations

import argparse
import sys

from resnets.reports.compare import SORTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare runs in one table: errors, speed, and the settings that differ between them",
        description="Print a Markdown table of the runs: model, data, parameters, epochs, steps, final train and "
        "test error, best validation error, wall time, images/s, and the settings whose values differ between the "
        "runs (a sweep's variables). A folder that holds runs stands for all of them. A run without summary.json "
        "is shown with its metrics so far, as 'running' (a live trainer holds it) or 'stopped'. With --out DIR, "
        "also write DIR/compare.md, compare.json and compare.png (test error and training loss against epoch).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run directory, or a folder holding run directories")
    parser.add_argument(
        "--sort",
        choices=SORTS,
        default="test",
        help="order of the rows: by final test error (default), best val error or final train error, lowest "
        "first; by run name; or as given",
    )
    parser.add_argument("--out", metavar="DIR", help="also write compare.md, compare.json and compare.png here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resnets.io.text import printable
    from resnets.reports.compare import compare_runs, differs_line, markdown_table, write_comparison

    comparison = compare_runs(args.runs, sort=args.sort)
    for line in comparison.skipped:
        print(f"resnets compare: skipped {printable(line)}", file=sys.stderr)  # folder names and file contents
    print(markdown_table(comparison))
    print()
    print(differs_line(comparison))
    if args.out:
        paths = write_comparison(comparison, args.out)
        print(f"wrote {', '.join(map(str, paths))}")
    return 0
