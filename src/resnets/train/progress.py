"""Progress bars with images/s and ETA (tqdm); silent in quiet mode."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from resnets.train.state import TrainState

REFRESH_STEPS = 10  # steps between postfix updates (formatting costs time on 2 cores)


class Progress:
    def __init__(self, quiet: bool, total_epochs: int, steps_per_epoch: int) -> None:
        self.quiet, self.total_epochs, self.steps_per_epoch = quiet, total_epochs, steps_per_epoch
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, batch: int) -> None:
        if self.quiet:
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

    def update(self, state: TrainState, lr: float) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if state.batch % REFRESH_STEPS == 0:
            rate = state.seen / max(state.epoch_time_s, 1e-9)
            self.bar.set_postfix_str(
                f"loss {state.train_loss:.3f} err {state.train_error:.1f}% lr {lr:.3g} {rate:.0f} img/s"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write_epoch(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        test = "n/a" if row.get("test_error") is None else f"{row['test_error']:.2f}%"
        val = f" val error {row['val_error']:.2f}%" if row.get("val_error") is not None else ""
        tqdm.write(
            f"epoch {row['epoch']:g}: train loss {row['train_loss']:.4f} error {row['train_error']:.2f}% | "
            f"test error {test}{val} | {row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.0f} s",
            file=sys.stderr,
        )
