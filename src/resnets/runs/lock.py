"""One writer per run directory: an exclusive ``flock`` on ``RUN/.lock`` for the whole training session.

Why ``flock`` and not a pid file: the kernel drops the lock when the holder exits, however it exits (crash,
SIGKILL, out of memory), so a dead run never leaves a stale lock to delete by hand. The lock is the ``flock``;
the file's content only describes the holder (pid, host, command line, start time) so that a refused second
writer can say who is in the way. The file stays after release (emptied): deleting it would let two later
writers lock two different files of the same name. It is opened in place through the write guard
(:func:`resnets.io.guard.open_lock`), never through a link.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from resnets.errors import RunDirError, RunDirInUseError
from resnets.io import guard
from resnets.io.guard import LOCK_FILE

_COMMAND_CHARS = 160  # the holder's command line is cut to keep the refusal on one readable line


class RunLock:
    """The held lock of one run directory; :meth:`release` (or leaving a ``with`` block) lets it go."""

    def __init__(self, run_dir: Path, handle: IO[bytes]) -> None:
        self.run_dir = run_dir
        self._handle: IO[bytes] | None = handle
        self.made: Path | None = None  # the outermost folder made for this run, removed again by abandon()

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock ``run_dir`` without waiting; a RunDirInUseError naming the holder if another process has it.

        Nothing in the directory changes when the lock is refused: the holder's description is read, not written.
        """
        run_dir = Path(run_dir)
        try:  # in place, through the write guard's checked walk: never a link, never a folder swapped for one
            fd, created = guard.open_lock(run_dir)
        except guard.WriteFailed as error:
            raise RunDirError(
                f"cannot lock run directory {str(run_dir)!r} ({error.strerror}); choose another --out"
            ) from None
        handle = os.fdopen(fd, "r+b")  # a file object: closed (and so unlocked) even if release is never called
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise RunDirInUseError(in_use_message(run_dir, holder)) from None
        except OSError as error:  # a filesystem without flock support
            handle.close()
            raise RunDirError(f"cannot lock run directory {str(run_dir)!r} ({error.strerror})") from None
        try:  # a full disk fails here: the lock is let go, and nothing of this attempt stays behind
            handle.truncate(0)
            handle.write((json.dumps(describe_holder()) + "\n").encode())
            handle.flush()
            guard.own(run_dir)
        except BaseException as error:
            _let_go(handle)
            if created:
                with contextlib.suppress(OSError):
                    (run_dir / LOCK_FILE).unlink()
            if isinstance(error, OSError):
                raise RunDirError(
                    f"cannot lock run directory {str(run_dir)!r} ({error.strerror or error}); free space or choose "
                    "another --out"
                ) from None
            raise
        return cls(run_dir, handle)

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Empty the description, then unlock (in that order, so the next holder's description survives)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        guard.disown(self.run_dir)
        try:
            handle.truncate(0)
            handle.flush()
        except OSError:
            pass  # the description stays; the lock goes all the same
        finally:
            _let_go(handle)

    def abandon(self) -> None:
        """Release, and remove the folders made for the run while they hold nothing but the lock and an empty
        ``checkpoints/``: a run that failed to start (a full disk, Ctrl-C, a refusal) leaves no stray folder."""
        self.release()
        if self.made is not None:
            remove_unused(self.run_dir, self.made)

    def __enter__(self) -> RunLock:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def remove_unused(run_dir: Path, made: Path) -> None:
    """Remove ``run_dir`` (and its parents up to ``made``) if nothing but the lock and empty folders are in it."""
    with contextlib.suppress(OSError):
        (run_dir / "checkpoints").rmdir()
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
        for folder in (run_dir, *run_dir.parents):
            folder.rmdir()  # fails (and stops) at the first folder that is not empty
            if folder == made:
                break


def _let_go(handle: IO[bytes]) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def describe_holder() -> dict[str, Any]:
    """Who holds the lock, as the refusal message shows it."""
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join(argv),
        "since": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _read_holder(handle: IO[bytes]) -> dict[str, Any]:
    """The holder's description, or {} while it is still being written (or was written by something else)."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read(4096).decode())
    except (ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def held_by_live_process(run_dir: Path) -> bool:
    """Whether a trainer holds the run now: the lock file names a holder that is still alive.

    Read-only: the lock itself is never taken, so a trainer starting at the same moment is not refused. A
    holder on another host is believed; one on this host is checked with signal 0.
    """
    try:
        with open(run_dir / LOCK_FILE, "rb") as handle:
            holder = _read_holder(handle)
    except OSError:
        return False
    if not isinstance(holder.get("pid"), int):
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False  # killed without releasing (SIGKILL, out of memory): its description stays
    except PermissionError:
        return True  # alive, owned by someone else
    except (OSError, OverflowError):
        return False
    return True


def in_use_message(run_dir: Path, holder: dict[str, Any]) -> str:
    """One line: which directory, who holds it (pid, host, since when, which command) and what to do."""
    who = f"pid {holder['pid']}" if "pid" in holder else "another process"
    if holder.get("host"):
        who += f" on host {holder['host']}"
    if holder.get("since"):
        try:
            who += f" since {datetime.fromisoformat(str(holder['since'])):%Y-%m-%d %H:%M}"
        except ValueError:
            pass
    command = " ".join(str(holder.get("command", "")).split())  # no newlines: the message stays on one line
    if command:
        cut = command if len(command) <= _COMMAND_CHARS else command[: _COMMAND_CHARS - 3] + "..."
        who += f" ({cut})"
    return f"run directory {str(run_dir)!r} is in use by {who}; wait for it or choose another --out"
