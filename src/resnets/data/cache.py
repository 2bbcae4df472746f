"""A disk cache of decoded arrays, so a JPEG tree is decoded once rather than on every run.

An entry is a folder of ``.npy`` arrays plus ``meta.json``, named by a hash of everything the decoded result
depends on (the caller builds the key: absolute path, file list, sizes, mtimes, options). Each file is written
atomically through the write guard (:mod:`resnets.io.guard`), the arrays first and ``meta.json`` last: an entry
is read only through its ``meta.json``, so a crash never leaves a half-written entry that looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from resnets.io import guard

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
    """Write an entry; a failure (read-only home, full disk, a refused folder) is logged and otherwise ignored,
    and leaves none of this attempt's files."""
    target = root / kind / key
    names = [f"{name}.npy" for name in arrays]
    try:
        guard.make_folder(root / kind)
        with guard.folder(target) as folder:
            folder.unlink("meta.json")  # the entry is not valid again until every array is written
            try:
                for name, array in zip(names, arrays.values()):
                    folder.write(name, partial(_save_array, array))
                folder.write("meta.json", json.dumps({**meta, "arrays": sorted(arrays)}, indent=1).encode())
            except BaseException:
                for name in names:  # a half-written entry would otherwise stay behind as an orphan folder
                    with contextlib.suppress(OSError):
                        folder.unlink(name)
                raise
    except (OSError, guard.WriteRefused) as err:
        log.warning("could not write the data cache in %s (%s); the next run decodes again", target, err)


def _save_array(array: np.ndarray, path: str) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would add ".npy" to a name without it
        np.save(handle, array, allow_pickle=False)
