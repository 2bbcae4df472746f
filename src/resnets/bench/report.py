"""The results as a table on stdout, as bench.json (every number) and as bench.md (a table and its command).

Numbers that were not measured (a skipped variant) are "-" in the tables and null in the JSON, which has
no NaN. bench.md starts with the command that reproduces it, because the table means nothing without it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from resnets.bench.machine import summary_line
from resnets.bench.results import Row
from resnets.bench.suite import BenchResult
from resnets.io.atomic import atomic_write_text

HEADER = ("case", "baseline", "ours", "unit", "ours/baseline", "peak share", "notes")

READING = (
    "Baseline and ours run in the same process, alternating, and each figure is the median over the rounds. "
    "ours/baseline is a speed-up for images/s, the share of memory kept for MB, and the time cost for s/step. "
    "Peak share is ours' FLOP/s (6 x MACs per image for a training step, 2 x MACs for inference) over the "
    "FLOP/s of a large matmul measured in this run in the same dtype."
)


def number(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cells(row: Row) -> tuple[str, ...]:
    ratio = f"{row.ratio:.2f}x" if math.isfinite(row.ratio) else "-"
    share = f"{100 * row.peak_fraction:.1f}%" if math.isfinite(row.peak_fraction) else "-"
    return (row.label, number(row.baseline), number(row.ours), row.unit, ratio, share, row.notes)


def peaks_line(peaks: dict[str, float]) -> str:
    return "peak: " + ", ".join(f"{dtype} {flops / 1e9:.1f} GFLOP/s" for dtype, flops in peaks.items())


def format_table(result: BenchResult) -> str:
    """A fixed-width table; notes last, so long ones only run past the right edge."""
    lines = [cells(row) for row in result.rows]
    widths = [max(len(line[i]) for line in [HEADER, *lines]) for i in range(len(HEADER) - 1)]
    rendered = []
    for line in [HEADER, *lines]:
        rendered.append("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths)) + "  " + line[-1])
    return "\n".join([summary_line(result.machine), peaks_line(result.peaks), *rendered])


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(result: BenchResult, command: str) -> dict[str, Any]:
    return _json_safe(
        {
            "command": command,
            "machine": result.machine,
            "settings": result.settings,
            "peak_flops": result.peaks,
            "seconds": result.seconds,
            "rows": [row.to_dict() for row in result.rows],
        }
    )


def to_markdown(result: BenchResult, command: str) -> str:
    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    table = [line(HEADER), line(tuple("---" for _ in HEADER)), *(line(cells(row)) for row in result.rows)]
    return "\n".join(
        [
            "# resnets bench",
            "",
            "Reproduce with:",
            "",
            "```",
            command,
            "```",
            "",
            f"Machine: {summary_line(result.machine)}; {peaks_line(result.peaks)}; took {result.seconds:.0f} s.",
            "",
            *table,
            "",
            READING,
            "",
        ]
    )


def write_report(result: BenchResult, command: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Write DIR/bench.json and DIR/bench.md; their paths."""
    out = Path(out_dir)
    json_path, md_path = out / "bench.json", out / "bench.md"
    atomic_write_text(json_path, json.dumps(to_json(result, command), indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, to_markdown(result, command))
    return json_path, md_path
