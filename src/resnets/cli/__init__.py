"""The ``resnets`` command: thin argument parsing over the library, one module per command.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed arguments and returning an exit status. How a command ends:

- ``0``: done;
- ``2``: bad input the user can act on (:class:`resnets.errors.ResnetsError`: a value, a file, a full disk, not
  enough memory; and a path the system refuses, however it was found), printed as one line without a traceback;
- ``130``: Ctrl-C or SIGTERM at any moment, start-up included: one line (a training run first saves a checkpoint);
- ``70``: anything else, which is a bug: one line ``internal error (a bug): TYPE: message`` and the traceback in a
  file whose path the line gives.

Every line is printable: a name read from a file cannot carry a newline or a terminal escape into it. Nothing
heavy is imported before the signal handlers are in place, so even the seconds of importing torch end in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import secrets
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from resnets import __version__
from resnets.cli.suggest import parse_arguments
from resnets.errors import ResnetsError
from resnets.io.text import printable

#: Command modules under ``resnets.cli``, in the order ``--help`` lists them.
COMMAND_MODULES = ["models", "train", "eval", "predict", "export", "study", "report", "compare", "bench"]
#: Exit statuses (sysexits' EX_SOFTWARE for a bug; 128 + SIGINT for an interruption).
EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED = 2, 70, 130
_received: list[int] = []  # the signals that arrived while a command ran
_pending: list[int] = []  # a signal to deliver again in a moment (it landed where it could not interrupt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets",
        description="Residual networks: build, train, evaluate, predict, export, and study them.",
    )
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"resnets.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, early: Sequence[int] = ()) -> int:
    """Run the command line ``argv`` (default: the process's); ``early`` holds the signals that arrived while the
    program started (:mod:`resnets.__main__`). Returns the exit status (see the module docstring)."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if word in COMMAND_MODULES), None)
    with terminations_interrupt():
        try:
            if early:  # Ctrl-C or SIGTERM while the program started
                _interrupt(early[0], None)
            parser = build_parser()
            if _received:  # a signal during the imports, swallowed by a library's catch-all import fallback
                _interrupt(_received[0], None)
            args = parse_arguments(parser, words)  # an unknown flag: the command's usage and "did you mean"
            command = args.command
            code = int(args.func(args) or 0)
            if _received and code != EXIT_INTERRUPTED:  # something swallowed the interrupt of a signal
                _interrupt(_received[0], None)
            return code
        except ResnetsError as error:
            if _received:  # the error came after a swallowed interrupt: the interrupt is what the user did
                _say(command, _stopped(_received[0]))
                return EXIT_INTERRUPTED
            _say(command, f"error: {error}")
            return EXIT_BAD_INPUT
        except KeyboardInterrupt as stop:
            _say(command, str(stop) if str(stop) else "interrupted")
            return EXIT_INTERRUPTED
        except Exception as error:  # noqa: BLE001 - the last resort: every other exception is a bug
            refused = _out_of_memory(error) or _unusable_path(error)
            if refused is not None:
                _say(command, f"error: {refused}")
                return EXIT_BAD_INPUT
            _say(command, f"internal error (a bug): {type(error).__name__}: {error} ({_save_traceback(error)})")
            return EXIT_BUG


@contextlib.contextmanager
def terminations_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt as Ctrl-C (SIGINT) does, so both end in one line and status 130 (training
    installs its own handlers while it runs, to save a checkpoint first). The previous handler comes back after."""
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    for sig, handler in previous.items():
        # an ignored signal (nohup, a scheduler) stays ignored; resnets.__main__'s early handler is replaced
        if handler in (signal.SIG_DFL, signal.default_int_handler) or getattr(handler, "replaceable", False):
            signal.signal(sig, _interrupt)
    hook, sys.unraisablehook = sys.unraisablehook, _interrupt_again(sys.unraisablehook)
    try:
        yield
    finally:
        _pending.clear()
        sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _interrupt_again(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook for the interrupt: where our KeyboardInterrupt lands in code whose exceptions
    Python ignores (a weakref callback of the import machinery, a ``__del__``), it would print "Exception ignored"
    and be lost; the signal is raised again instead, to interrupt the command a moment later."""

    def handle(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # any line run here would meet the tripped flag inside this hook (whose exceptions are ignored too),
            # so another thread trips it a moment after the hook has returned
            _deliver_later(_received[-1] if _received else signal.SIGINT)
            return
        hook(unraisable)

    return handle


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if frame is not None:
        _received.append(signum)
        if _importing(frame):
            _deliver_later(signum)
            return
    _pending.clear()  # this interrupt is the one: nothing is delivered again after it
    raise KeyboardInterrupt(_stopped(signum))


def _importing(frame: FrameType | None) -> bool:
    """Whether the signal landed while a module is being imported. Importing torch runs Python callbacks from C++
    (pybind11), and an exception raised in one of those ends the process with ``std::terminate`` (status -6, a C++
    message): the interrupt waits until the import is done."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int) -> None:
    """The signal again in a moment, from another thread, to interrupt the command at its next line (unless an
    interrupt has ended it by then)."""
    import threading

    _pending[:] = [signum]
    again = threading.Timer(0.05, _deliver_pending)
    again.daemon = True
    again.start()


def _deliver_pending() -> None:
    import _thread

    if _pending:
        _thread.interrupt_main(_pending[0])


def _stopped(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by signal {signum}"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _say(command: str | None, message: object) -> None:
    """One printable line on stderr: ``resnets COMMAND: message``."""
    prefix = f"resnets {command}" if command else "resnets"
    with contextlib.suppress(OSError):  # a closed stderr cannot be told anything
        print(f"{prefix}: {printable(message)}", file=sys.stderr, flush=True)


def _out_of_memory(error: BaseException) -> str | None:
    """A line for running out of memory (a request the size checks let through), else None."""
    text = str(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text:
        detail = text.split(". ")[0] if text else type(error).__name__
        return f"not enough memory ({detail}); use a smaller batch, image size or model"
    return None


def _unusable_path(error: BaseException) -> str | None:
    """A line for a path the system refuses (too long, no permission, a NUL byte in it), else None: what the user
    named cannot be used, whichever check did not say so first."""
    if isinstance(error, OSError) and error.filename is not None:
        name = str(error.filename)
        name = name if len(name) <= 160 else name[:80] + "..." + name[-77:]
        return f"cannot use {name!r}: {error.strerror or error}"
    if isinstance(error, ValueError) and "embedded null" in str(error):
        return "a file name holds a NUL character, which no file name can; check the paths given"
    return None


def _save_traceback(error: BaseException) -> str:
    """Write the traceback to a new file in the temporary folder; the words that say where (or why not)."""
    from resnets.io import guard

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    content = f"resnets {__version__}: {' '.join(sys.argv)}\n{text}".encode("utf-8", "backslashreplace")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(8):  # a random name, as mkstemp's; a taken one is tried again
        path = Path(tempfile.gettempdir()) / f"resnets-internal-error-{stamp}-{secrets.token_hex(4)}.txt"
        try:
            guard.write_new(path, content, mode=0o600)  # a new file, as mkstemp's: private, never replacing one
        except (OSError, ResnetsError) as failure:
            if getattr(failure, "errno", None) == errno.EEXIST:
                continue
            return f"the traceback could not be saved: {failure}"
        return f"traceback in {path}; please report it"
    return "the traceback could not be saved: no free file name in the temporary folder"


if __name__ == "__main__":
    sys.exit(main())
