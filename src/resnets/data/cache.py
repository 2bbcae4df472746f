"""A disk cache of decoded arrays, so a JPEG tree is decoded once rather than on every run.

An entry is a folder of ``.npy`` arrays plus ``meta.json``, named by a hash of everything the decoded result
depends on (the caller builds the key: absolute path, file list, sizes, mtimes, options). It is written to a
temporary folder and renamed into place, so a crash never leaves a half-written entry that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("resnets.data")
FORMAT_VERSION = 1


def cache_dir() -> Path:
    """``$RESNETS_CACHE_DIR`` if set, else ``~/.cache/resnets``."""
    env = os.environ.get("RESNETS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnets"


def cache_key(payload: Any) -> str:
    """A stable hash of a JSON-serialisable description of the inputs."""
    text = json.dumps({"version": FORMAT_VERSION, "payload": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_entry(root: Path, kind: str, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and metadata stored under ``key``, or None when absent or unreadable."""
    entry = root / kind / key
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in meta["arrays"]}
    except (OSError, ValueError, KeyError):
        return None
    return arrays, meta


def store_entry(root: Path, kind: str, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write an entry atomically; a failure (read-only home, full disk) is logged and otherwise ignored."""
    target = root / kind / key
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps({**meta, "arrays": sorted(arrays)}, indent=1))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except OSError as err:
        log.warning("could not write the data cache in %s (%s); the next run decodes again", target, err)
        if staging is not None:  # a half-written entry would otherwise stay behind as an orphan folder
            shutil.rmtree(staging, ignore_errors=True)
