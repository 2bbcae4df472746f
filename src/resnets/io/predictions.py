"""Prediction tables as text, CSV, JSON or JSON lines, printed or written atomically to a file.

Every format has the same content: for each image its path and its top-k classes, each with its rank (1 is
the most probable), label and probability in [0, 1]. CSV has one row per (image, rank), with the columns
``path,rank,label,probability``; JSON is one array of ``{"path", "top": [{"rank", "label", "probability"}]}``
objects; JSON lines has one such object per line (what ``--json`` printed before formats existed).

A file is written through a temporary file renamed into place (:mod:`resnets.io.atomic`), and never over a
file of a run directory, the model file or an input image: the output of one command must not destroy the
inputs of another.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from resnets.errors import ConfigError
from resnets.io import guard
from resnets.io.atomic import atomic_write_text, json_text
from resnets.io.text import csv_cell, printable

FORMATS = ("text", "csv", "json", "jsonl")
SUFFIXES = {".txt": "text", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}


class Ranked(Protocol):
    """A prediction: its image's path and its top classes, best first (``resnets.predict.Prediction``)."""

    path: str
    labels: list[str]
    probabilities: list[float]

    def to_dict(self) -> dict: ...


def choose_format(format: str | None, output: str | Path | None) -> str:
    """``format`` where given, else the output file's extension, else text."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"unknown predictions format {format!r}; expected one of {', '.join(FORMATS)}")
        return format
    if output is None:
        return "text"
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"cannot tell the format of --output {str(output)!r} from its extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(SUFFIXES)}, or give --format"
        )
    return SUFFIXES[suffix]


def render(predictions: Sequence[Ranked], format: str) -> str:
    """The predictions in ``format``, ending with a newline (empty for no predictions).

    Paths and labels come from files (folder names, a run record), so text and CSV show them escaped
    (:mod:`resnets.io.text`); JSON escapes control characters itself.
    """
    if format == "jsonl":
        return "".join(json_text(p.to_dict(), indent=None) for p in predictions)
    if format == "json":
        return json_text([p.to_dict() for p in predictions])
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "label", "probability"])
        for p in predictions:
            for rank, (label, probability) in enumerate(zip(p.labels, p.probabilities), start=1):
                writer.writerow([csv_cell(p.path), rank, csv_cell(label), repr(float(probability))])
        return buffer.getvalue()
    if format == "text":
        lines = []
        for p in predictions:
            lines.append(printable(p.path))
            lines.extend(f"  {100 * q:6.2f}%  {printable(label)}" for label, q in zip(p.labels, p.probabilities))
        return "".join(line + "\n" for line in lines)
    raise ConfigError(f"unknown predictions format {format!r}; expected one of {', '.join(FORMATS)}")


def check_output(path: str | Path, *, protected: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an output that would replace one of ``protected`` (the model file, the images) or
    that the write guard refuses: any existing file of a run directory, a link, a folder (:mod:`resnets.io.guard`)."""
    path = Path(path)
    if path.exists() and any(path.resolve() == Path(p).resolve() for p in protected):
        raise ConfigError(f"--output {str(path)!r} is one of predict's inputs; give another path")
    guard.check(path, replace_in_run=False)


def write_predictions(predictions: Sequence[Ranked], path: str | Path, format: str) -> None:
    """Write the rendered predictions to ``path`` through the write guard: atomically, and never over a file of a
    run directory; a full disk or a read-only folder is one line."""
    atomic_write_text(path, render(predictions, format), replace_in_run=False)
