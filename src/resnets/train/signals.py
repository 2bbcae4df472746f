"""SIGINT/SIGTERM during training: finish the current step, save a resumable checkpoint, then stop.

A second signal stops at once (the last saved checkpoint stays valid: every write is atomic).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class StopRequests:
    """Context manager that turns the first SIGINT/SIGTERM into a flag the training loop polls."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # second signal: give up on the clean stop
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopRequests:  # noqa: PYI034 - Python 3.10 has no typing.Self
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the checkpoint of an interrupted run is saved; the message says how to resume."""
