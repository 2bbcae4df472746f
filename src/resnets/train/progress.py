"""What a training session shows while it runs: a tqdm bar on a terminal, plain log lines elsewhere.

On a terminal the bar shows tqdm's ETA of the epoch and, in its postfix, the ETA of the whole run. When stderr
is a file or a pipe (a log, a batch job) a bar would write carriage returns into it, so one plain line is
printed every ``log_every`` steps instead. Quiet mode (and every rank but the writing one) shows nothing.

The whole-run ETA is measured on this session only: seconds per training step (evaluations excluded), times
the steps left, plus the mean time of this session's evaluations (with their checkpoint saves) times the
evaluations left. Before the first evaluation of a session it counts the steps only.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from resnets.train.state import RunCounters

REFRESH_STEPS = 10  # steps between postfix updates of the bar (formatting costs time on 2 cores)
LINES_PER_EPOCH = 20  # log_every=None: about this many plain lines per epoch ...
MAX_LOG_EVERY = 50  # ... and at least one every this many steps


def auto_log_every(steps_per_epoch: int) -> int:
    """Steps between plain log lines when ``log_every`` is None: ~20 lines per epoch, at least one per 50 steps."""
    return max(1, min(MAX_LOG_EVERY, math.ceil(steps_per_epoch / LINES_PER_EPOCH)))


def evaluations_left(step: int, last_step: int, steps_per_epoch: int, eval_every: int) -> int:
    """Evaluations the engine still runs after ``step`` steps, counting one due at ``step`` itself.

    The engine evaluates at the end of every ``eval_every``-th epoch, at the end of the epoch holding the last
    step, and once more at the last step when it falls inside an epoch (``max_steps``).
    """
    first = max(1, math.ceil(step / steps_per_epoch))  # the first epoch whose end is still to come
    last = last_step // steps_per_epoch  # the last epoch that ends at or before the last step
    if first > last:
        return 1 if last_step % steps_per_epoch else 0  # only the final evaluation inside an epoch
    count = last // eval_every - (first - 1) // eval_every  # multiples of eval_every in [first, last]
    if last % eval_every and last_step % steps_per_epoch == 0:
        count += 1  # the epoch that ends at the last step is evaluated whatever eval_every says
    return count + (1 if last_step % steps_per_epoch else 0)


def run_eta_s(steps_left: int, step_s: float, evals_left: int, eval_s: float | None) -> float:
    """Seconds to the end of the run: training steps plus evaluations (ignored until one has been timed)."""
    return steps_left * step_s + (evals_left * eval_s if eval_s is not None else 0.0)


def format_duration(seconds: float) -> str:
    """``45s``, ``9m12s`` or ``2h05m``: short enough for a bar's postfix."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


class RunClock:
    """This session's seconds per training step and per evaluation; the gaps between training segments in
    which an evaluation happened are its evaluation times (with the checkpoint saves that follow each)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.steps = 0  # training steps of this session
        self.train_s = 0.0  # their time, for the segments already paused
        self.segment_start: float | None = None
        self.paused_at: float | None = None
        self.evaluated = False  # an evaluation happened since the last pause
        self.eval_s: list[float] = []

    def start(self) -> None:
        """A training segment starts; the pause before it was an evaluation when one was reported."""
        now = self.clock()
        if self.paused_at is not None and self.evaluated:
            self.eval_s.append(now - self.paused_at)
        self.paused_at, self.evaluated, self.segment_start = None, False, now

    def pause(self) -> None:
        if self.segment_start is not None:
            now = self.clock()
            self.train_s += now - self.segment_start
            self.segment_start, self.paused_at = None, now

    def step_s(self) -> float | None:
        """Mean seconds per training step of this session so far; None before the first step."""
        if self.steps == 0:
            return None
        running = self.clock() - self.segment_start if self.segment_start is not None else 0.0
        return (self.train_s + running) / self.steps

    def mean_eval_s(self) -> float | None:
        return sum(self.eval_s) / len(self.eval_s) if self.eval_s else None


class Progress:
    """The bar or log lines of one session; ``update`` is called after every step, so it does little."""

    def __init__(
        self,
        quiet: bool,
        *,
        steps_per_epoch: int,
        last_step: int,
        eval_every: int = 1,
        log_every: int | None = None,
    ) -> None:
        self.quiet, self.steps_per_epoch, self.last_step = quiet, steps_per_epoch, last_step
        self.total_epochs = math.ceil(last_step / steps_per_epoch)
        self.eval_every = eval_every
        self.log_every = log_every or auto_log_every(steps_per_epoch)
        self.tty = sys.stderr.isatty()
        self.clock = RunClock()
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, batch: int) -> None:
        self.clock.start()
        if self.quiet or not self.tty:
            return
        self.bar = tqdm(
            total=self.steps_per_epoch,
            initial=batch,
            desc=f"epoch {epoch + 1}/{self.total_epochs}",
            unit="step",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def update(self, state: RunCounters, lr: float) -> None:
        self.clock.steps += 1
        if self.bar is not None:
            self.bar.update(1)
            if state.batch % REFRESH_STEPS == 0:
                self.bar.set_postfix_str(f"{self._figures(state, lr)}, run eta {self._eta(state.step)}")
        elif not self.quiet and state.step % self.log_every == 0:
            print(
                f"step {state.step}/{self.last_step} (epoch {state.epoch + 1}/{self.total_epochs}) "
                f"{self._figures(state, lr)} eta {self._eta(state.step)}",
                file=sys.stderr,
                flush=True,
            )

    def _figures(self, state: RunCounters, lr: float) -> str:
        rate = state.seen / max(state.epoch_time_s, 1e-9)
        return f"loss {state.train_loss:.3f} err {state.train_error:.1f}% lr {lr:.3g} {rate:.0f} img/s"

    def _eta(self, step: int) -> str:
        step_s = self.clock.step_s()
        if step_s is None:
            return "?"
        evals = evaluations_left(step, self.last_step, self.steps_per_epoch, self.eval_every)
        return format_duration(run_eta_s(self.last_step - step, step_s, evals, self.clock.mean_eval_s()))

    def close(self) -> None:
        self.clock.pause()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write_epoch(self, row: dict[str, Any]) -> None:
        self.clock.evaluated = True  # the engine writes a row after each evaluation
        if self.quiet:
            return
        test = "n/a" if row.get("test_error") is None else f"{row['test_error']:.2f}%"
        val = f" val error {row['val_error']:.2f}%" if row.get("val_error") is not None else ""
        tqdm.write(
            f"epoch {row['epoch']:g}: train loss {row['train_loss']:.4f} error {row['train_error']:.2f}% | "
            f"test error {test}{val} | {row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.0f} s",
            file=sys.stderr,
        )
