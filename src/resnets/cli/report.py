"""``resnets report DIR``: one self-contained HTML page (and a Markdown twin) of every study in DIR."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="gather every study in a directory into one HTML page and a Markdown twin",
        description="Re-judge and re-render every NAME.json that `resnets study NAME --out DIR` wrote into DIR "
        "(from the JSON alone: its verdict, table, figures and NAME.md are written again), then write "
        "DIR/report.html (one file: figures embedded, no network access) and DIR/report.md (figures linked). "
        "An unreadable NAME.json is named on stderr and left out; the others are still reported.",
    )
    parser.add_argument("directory", metavar="DIR", help="a study output directory (resnets study --out DIR)")
    parser.add_argument("--out", metavar="FILE.html", help="where to write the page (default: DIR/report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from resnets.studies.report import write_report

    report = write_report(args.directory, args.out)
    for line in report.skipped:
        print(f"resnets report: skipped {line}", file=sys.stderr)
    print(f"{len(report.studies)} studies: {', '.join(report.studies)}")
    if report.absent:
        print(f"absent: {', '.join(report.absent)}")
    print(f"wrote {report.html}, {report.markdown}")
    return 0
