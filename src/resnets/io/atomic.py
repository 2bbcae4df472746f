"""Atomic file writes, all through the write guard (:mod:`resnets.io.guard`): a temporary file in the same
folder, flushed to disk, then renamed into place.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one, whenever the
process is killed; a failure leaves the old file and no temporary one. The file gets the permissions a plain
``open`` would give it (0666 less the umask, usually 0644), not the private 0600 of a temporary file: run
directories and reports are for sharing.

JSON is written without NaN or infinity, which JSON does not have: :func:`json_text` writes them as null, and
:func:`atomic_write_text` rewrites a ``.json`` or ``.jsonl`` text that still holds them the same way, so no JSON
file this package writes holds a token other programs cannot read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnets.io import guard

JSON_SUFFIXES = (".json", ".jsonl")


def atomic_write(path: str | Path, write: Callable[[str], None] | bytes, *, replace_in_run: bool = True) -> None:
    """Fill a temporary file with ``write`` (bytes, or ``write(tmp_path)``), then move it onto ``path`` in one
    rename; refused where the guard refuses (see :mod:`resnets.io.guard`)."""
    guard.write(path, write, replace_in_run=replace_in_run)


def atomic_write_text(path: str | Path, text: str, *, replace_in_run: bool = True) -> None:
    """``text`` as UTF-8, atomically; a JSON file's NaN and infinities become null (see the module docstring)."""
    if Path(path).suffix.lower() in JSON_SUFFIXES:
        text = _without_non_finite(text, lines=Path(path).suffix.lower() == ".jsonl")
    guard.write(path, text.encode("utf-8"), replace_in_run=replace_in_run)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json_text(data, indent=indent))


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as JSON text ending in a newline, with NaN and infinities written as null."""
    return json.dumps(finite(data), indent=indent, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (a missing measurement); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _without_non_finite(text: str, *, lines: bool) -> str:
    """``text`` unchanged unless it holds NaN or Infinity tokens; then re-written with null in their place."""
    found = []

    def constant(token: str) -> float:
        found.append(token)
        return math.nan

    try:
        rows = [line for line in text.splitlines() if line.strip()] if lines else [text]
        parsed = [json.loads(row, parse_constant=constant) for row in rows]
    except ValueError:
        return text  # not JSON: nothing of ours to repair
    if not found:
        return text
    if lines:
        return "".join(json_text(row, indent=None) for row in parsed)
    return json_text(parsed[0], indent=2 if "\n " in text else None)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
