"""``python -m resnets`` and the ``resnets`` console script: the command, with signals heard from the first line.

Ctrl-C or SIGTERM while Python imports the command (torch alone takes seconds) would otherwise be a traceback
or a silent kill. Before anything else is imported, both are only remembered here; the command then turns a
remembered one into its usual line and status 130 (:func:`resnets.cli.main`).
"""

import contextlib
import os
import signal
import sys
from types import FrameType

EARLY: list[int] = []  # signals that arrived before the command's own handlers were in place


def _remember(signum: int, frame: FrameType | None) -> None:
    EARLY.append(signum)


_remember.replaceable = True  # type: ignore[attr-defined]  # resnets.cli.main installs its own handler over it
for _sig in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_sig) in (signal.SIG_DFL, signal.default_int_handler):  # an ignored signal stays ignored
        signal.signal(_sig, _remember)


def run() -> int:
    from resnets.cli import main

    code = main(early=EARLY)
    if code == 130:
        # A signal that lands while a C extension runs Python code (importing torch does) leaves CPython marked as
        # interrupted, and it would then end by SIGINT whatever the status: an interrupted command ends here.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
