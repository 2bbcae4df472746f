"""The one check that a path is a regular file before it is opened: a named pipe would block its reader until
something writes to it, and a directory or device is never a model, weight or image file."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def not_regular(path: str | Path) -> str | None:
    """None for a regular file, else why not, as the end of a sentence ("does not exist", "is a named pipe")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if stat.S_ISREG(mode):
        return None
    return (
        "is a directory"
        if stat.S_ISDIR(mode)
        else "is a named pipe"
        if stat.S_ISFIFO(mode)
        else "is not a regular file"
    )
