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
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from resnets.errors import ConfigError
from resnets.io.atomic import atomic_write_text

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
    """The predictions in ``format``, ending with a newline (empty for no predictions)."""
    if format == "jsonl":
        return "".join(json.dumps(p.to_dict()) + "\n" for p in predictions)
    if format == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2) + "\n"
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "label", "probability"])
        for p in predictions:
            for rank, (label, probability) in enumerate(zip(p.labels, p.probabilities), start=1):
                writer.writerow([p.path, rank, label, repr(float(probability))])
        return buffer.getvalue()
    if format == "text":
        lines = []
        for p in predictions:
            lines.append(p.path)
            lines.extend(f"  {100 * q:6.2f}%  {label}" for label, q in zip(p.labels, p.probabilities))
        return "".join(line + "\n" for line in lines)
    raise ConfigError(f"unknown predictions format {format!r}; expected one of {', '.join(FORMATS)}")


def check_output(path: str | Path, *, run_dir: Path | None, protected: Sequence[str | Path] = ()) -> None:
    """Refuse an output that is not a plain new or existing file, or that would replace one of ``protected``
    (the model file, the images) or, when ``run_dir`` (the run directory it lies in) is given, a file of that run;
    a new file is fine."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a symlink" if path.is_symlink() else "not a regular file"
        raise ConfigError(f"--output {str(path)!r} is {kind}; predict writes only regular files: give another path")
    if not path.exists():
        return
    target = path.resolve()
    if any(target == Path(p).resolve() for p in protected):
        raise ConfigError(f"--output {str(path)!r} is one of predict's inputs; give another path")
    if run_dir is not None:
        raise ConfigError(
            f"--output {str(path)!r} is a file of the run directory {str(run_dir)!r}; predict does not overwrite "
            "a run's files: give a new name or a path outside the run"
        )


def write_predictions(predictions: Sequence[Ranked], path: str | Path, format: str) -> None:
    """Write the rendered predictions to ``path`` atomically; a full disk or read-only folder is one line."""
    text = render(predictions, format)
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise ConfigError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
