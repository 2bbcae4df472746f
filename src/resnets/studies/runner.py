"""The one runner of every instrument: measure, write NAME.json, judge, render, write NAME.md.

``run_study("lesion", seeds=2, out="studies")`` runs an instrument and saves it in one call. The numbers are
passed through JSON before they are judged and rendered, so what a live run judges is exactly what NAME.json
holds: :func:`rerender` re-judges and re-renders a study from its NAME.json alone and writes the same files
(``resnets report`` does it for every study before gathering them). JSON has no NaN or infinity: such values
are written as null, which ``judge`` and ``render`` read as "not measured".
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from resnets.errors import ConfigError
from resnets.io import guard
from resnets.io.atomic import atomic_write_text
from resnets.studies.contract import Context
from resnets.studies.job import current_job
from resnets.studies.verdict import Verdict

#: The layout of NAME.json; 1 was the layout before the instrument contract (no re-judging, no checks).
FORMAT = 2


@dataclass(frozen=True)
class Saved:
    """What :func:`save` wrote, and the verdict it wrote."""

    json: Path
    markdown: Path
    figures: tuple[Path, ...]
    verdict: Verdict
    record: dict[str, Any]


def run_study(
    name: str,
    options: Any = None,
    context: Context | None = None,
    *,
    command: str = "",
    **fields: Any,
) -> Saved:
    """Run instrument ``name`` and write its files; ``fields`` set options (``seeds=2``) or context (``out=...``).

    >>> run_study("hessian", depths=(2, 4, 8), out="studies")  # doctest: +SKIP
    """
    from resnets.studies import get_study

    instrument = get_study(name)
    own = {f.name for f in dataclasses.fields(instrument.Options)}
    shared = {f.name for f in dataclasses.fields(Context)}
    unknown = sorted(set(fields) - own - shared)
    if unknown:
        raise ConfigError(
            f"study {name!r} has no setting {unknown[0]!r}; its settings are {', '.join(sorted(own | shared))}"
        )
    options = dataclasses.replace(options or instrument.Options(), **{k: v for k, v in fields.items() if k in own})
    context = dataclasses.replace(context or Context(), **{k: v for k, v in fields.items() if k in shared})
    job = current_job()
    job.measuring(name)
    numbers = instrument.measure(options, context)
    record = {
        "format": FORMAT,
        "name": name,
        "claim": instrument.CLAIM,
        "precision": context.precision_mode,
        "command": command,
        "settings": {**dataclasses.asdict(options), **context.described(), **numbers.get("settings", {})},
        "numbers": numbers,
    }
    saved = save(instrument, record, context.out)
    job.measured(name)
    return saved


def save(instrument: ModuleType, record: dict[str, Any], out: str | Path) -> Saved:
    """Judge and render ``record["numbers"]`` and write NAME.json, the figures and NAME.md into ``out``."""
    out = Path(out)
    guard.make_folder(out)  # no link inside a run, not a run's own folder; refused before judging or drawing
    record = json_safe(record)
    numbers = record["numbers"]
    verdict = instrument.judge(numbers)
    table, figures = instrument.render(numbers, out)
    thresholds = {key: t.to_dict() for key, t in instrument.THRESHOLDS.items()}
    written = {
        "format": FORMAT,
        "name": record["name"],
        "claim": instrument.CLAIM,
        "verdict": verdict.text,
        "supported": verdict.supported,
        "status": verdict.status,
        "checks": [c.to_dict() for c in verdict.checks],
        "settling": verdict.settling,
        "convergence": verdict.convergence,
        "thresholds": thresholds,
        "precision": record.get("precision", ""),
        "settings": record.get("settings", {}),
        "numbers": numbers,
        "table": table,
        "figures": [Path(p).name for p in figures],
        "command": record.get("command", ""),
    }
    written = json_safe(written)
    json_path = out / f"{record['name']}.json"
    atomic_write_text(json_path, json.dumps(written, indent=2) + "\n")
    md_path = out / f"{record['name']}.md"
    atomic_write_text(md_path, markdown(written))
    return Saved(json_path, md_path, tuple(Path(p) for p in figures), verdict, written)


def rerender(path: str | Path) -> Saved:
    """Re-judge and re-render the study in ``path`` (a NAME.json) from its numbers alone; rewrites its files.

    A JSON this version cannot re-judge (an older layout, an unknown instrument, numbers that do not fit the
    instrument) raises ConfigError naming the file.
    """
    from resnets.studies import STUDIES, get_study

    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not readable JSON ({' '.join(str(error).split())})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("name") not in STUDIES:
        raise ConfigError(f"{path}: not a study of format {FORMAT} by a known instrument; it cannot be re-judged")
    if not isinstance(record.get("numbers"), dict):
        raise ConfigError(f"{path}: 'numbers' must be an object")
    try:
        return save(get_study(record["name"]), record, path.parent)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ConfigError(
            f"{path}: its numbers do not fit the {record['name']} instrument ({type(error).__name__}: {error})"
        ) from None


def markdown(record: dict[str, Any]) -> str:
    """NAME.md: the claim, the verdict with the checks that decided it, the numbers, figures and settings."""
    lines = [
        f"# {record['name']}",
        "",
        f"**Claim.** {record['claim']}",
        "",
        f"**Verdict ({record['status']}).** {record['verdict']}",
        "",
    ]
    if record["checks"]:
        lines += [
            "## Checks",
            "",
            "| check | measured (over seeds) | threshold | paper | status |",
            "|---|---|---|---|---|",
        ]
        for check in record["checks"]:
            threshold = check["threshold"]
            interval = check["interval"]
            measured = "n/a" if interval is None else f"{_g(check['mean'])} ({_g(interval[0])} to {_g(interval[1])})"
            side = f"{'>' if threshold['above'] else '<'} {_g(threshold['value'])} {threshold['unit']}".strip()
            paper = f"{threshold['paper']} ({threshold['source']})"
            lines.append(f"| {_cell(check['what'])} | {measured} | {side} | {_cell(paper)} | {check['status']} |")
        lines.append("")
    lines += ["## Measured", "", record["table"].strip(), ""]
    if record["figures"]:
        lines += ["## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in record["figures"]] + [""]
    lines += ["## Settings", ""]
    if record.get("precision"):
        lines += [f"Precision: {record['precision']}.", ""]
    lines += [", ".join(f"{k}={v}" for k, v in record["settings"].items()), ""]
    if record.get("command"):
        lines += ["Reproduce with:", "", "```bash", record["command"], "```", ""]
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` as it reads back from JSON: NaN and infinities as None, tuples as lists, keys as text."""
    return json.loads(json.dumps(_plain(value)))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    return value


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
