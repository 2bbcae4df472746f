"""Resume trusts only what it wrote: a run record edited since its checkpoint is refused like the same flag.

Each checkpoint's manifest carries the run record (``config.json``) it was saved beside and its sha256
(:func:`resnets.runs.checkpoint.committed_record`). When the record on disk no longer has that hash, its fields
are compared with the saved ones: a field that a resume may change by a flag (``--lr``, ``--epochs``, the
device) may differ, since a resumed session rewrites the record before its first checkpoint; any other (the
data, the batch, the seed, the model, the classes) is refused, naming each field that differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.io.atomic import sha256_bytes
from resnets.io.schema import parse_json, read_text, shown
from resnets.runs.checkpoint import committed_record
from resnets.runs.record import RECORD_FILE

#: Top-level record fields that a resumed session decides again (``--device``, ``--amp``, ``--channels-last``).
SESSION_FIELDS = ("device", "amp", "amp_dtype", "channels_last")
_SHOWN_FIELDS = 4


def refuse_record_edits(run_dir: str | Path, frozen: Iterable[str], recipe_frozen: Iterable[str]) -> None:
    """Raise a ConfigError naming the fields of ``RUN/config.json`` changed since the newest checkpoint that a
    resume cannot change (``frozen`` run fields and ``recipe_frozen`` recipe fields, as for flags, and every field
    that a flag does not set)."""
    run_dir = Path(run_dir)
    saved = committed_record(run_dir / "checkpoints")
    if saved is None:  # a checkpoint from before manifests carried the record
        return
    step, digest, record = saved
    text = read_text(run_dir / RECORD_FILE, "run record")
    if sha256_bytes(text.encode("utf-8")) == digest:
        return
    changed = [
        (path, old, new)
        for path, old, new in differences(record, parse_json(text, str(run_dir / RECORD_FILE)))
        if not _may_change(path, set(frozen), set(recipe_frozen))
    ]
    if not changed:
        return
    listed = "; ".join(f"{path} {shown(old)} -> {shown(new)}" for path, old, new in changed[:_SHOWN_FIELDS])
    more = f" and {len(changed) - _SHOWN_FIELDS} more" if len(changed) > _SHOWN_FIELDS else ""
    raise ConfigError(
        f"cannot resume {str(run_dir)!r}: its {RECORD_FILE} was changed since the checkpoint of step {step} was saved "
        f"({listed}{more}); a resume cannot change these, as the same flags are refused: restore the file, or "
        "start a new run with --out"
    )


def differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for each field that differs; objects are compared field by field."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in [*old, *(k for k in new if k not in old)]:
            found += differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if old == new else [(path or "the record", old, new)]


def _may_change(path: str, frozen: set[str], recipe_frozen: set[str]) -> bool:
    parts = path.split(".")
    if parts[0] in SESSION_FIELDS and len(parts) == 1:
        return True
    if parts[0] == "train" and len(parts) >= 2 and parts[1] != "recipe":
        return parts[1] not in frozen
    recipe_key = parts[2] if parts[:2] == ["train", "recipe"] and len(parts) > 2 else None
    if parts[0] == "recipe" and len(parts) > 1:
        recipe_key = parts[1]
    return recipe_key is not None and recipe_key not in recipe_frozen and recipe_key != "name"
