"""Errors a user can act on.

Every error raised for bad input derives from :class:`ResnetsError`. The CLI prints its message on one
line and exits with status 2, without a traceback; programming errors keep their tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ResnetsError(Exception):
    """Bad input from the user: the message says what was received, what was expected and how to fix it."""


class UnknownNameError(ResnetsError, ValueError):
    """A name (model, dataset, recipe, option, format) that is not one of the known ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "") -> None:
        choices = sorted(valid)
        close = closest(str(name), choices)
        if close:  # a typo: the likely names, not the whole list
            message = f"unknown {kind} {name!r}; did you mean {' or '.join(close)}?"
        else:
            shown = ", ".join(choices[:60]) + (", ..." if len(choices) > 60 else "")
            message = f"unknown {kind} {name!r}; expected one of: {shown}"
        if hint:
            message += f" {hint}" if message.endswith("?") else f". {hint}"
        super().__init__(message)
        self.kind, self.name, self.valid = kind, name, choices


class InputShapeError(ResnetsError, ValueError):
    """A tensor whose rank or channel count does not fit the model."""


class DataError(ResnetsError):
    """A data set that is missing, of an unknown format, corrupt, or inconsistent."""


class ConfigError(ResnetsError, ValueError):
    """A configuration file or option that cannot be used as given."""


class CheckpointError(ResnetsError):
    """A weight or checkpoint file that cannot be loaded safely."""


class LesionError(ResnetsError, ValueError):
    """A unit (or branch) that cannot be deleted: a plain unit that changes the shape, or no such branch."""


class TrainingDivergedError(ResnetsError):
    """The loss became non-finite; the last good checkpoint is kept. ``step`` is the step that diverged."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class RunDirError(ResnetsError):
    """A run directory that cannot hold this run: a file, someone else's folder, or a place that is not writable."""


class RunDirInUseError(RunDirError):
    """Another process holds the run directory's lock; two writers would mix their checkpoints and metrics."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The choices that ``word`` is most likely a typo of (difflib's ratio of at least 0.6), best first."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def first_line(error: object) -> str:
    """An exception's first line (or its class name when it has no text), for a one-line message."""
    text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__
