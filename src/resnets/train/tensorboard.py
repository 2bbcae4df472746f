"""Optional TensorBoard event files (``--tensorboard``), laid out as Lightning users expect them.

- every step: ``train/loss``, ``train/error`` (%, of the batch) and ``train/lr``, at the step's number;
- every evaluation: ``train/epoch_loss``, ``train/epoch_error``, ``test/loss``, ``test/error``, ``val/loss``,
  ``val/error`` and ``speed/images_per_s``, at the step of the evaluation;
- at the end of a session: the recipe's hyperparameters with the model and data, and the run's result
  (``hparam/test_error`` of the checkpoint that ``eval`` reads, ``hparam/val_error`` where a validation split
  chose it), in the HParams tab.

Steps are written with each evaluation, from the engine's per-step log, so the step loop itself never waits on
TensorBoard. A resumed run writes only the steps after its checkpoint, so curves across sessions join up.

``RUN/tensorboard`` is made and opened through the write guard (:func:`resnets.io.guard.open_folder`: never a
link, only by the holder of the run's lock), and the writer is given that open folder (``/proc/self/fd/N`` on
Linux), not its path: a folder swapped for a link later cannot redirect the events. The event file itself is
TensorBoard's: it picks the name (time, host, pid) and reopens the file by that name to append at every flush,
so it cannot be handed a file the guard made; the guard answers for the folder it is made in.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.io import guard

#: Metrics-row keys and the grouped tag each is written under, at the row's step.
EPOCH_TAGS = {
    "train_loss": "train/epoch_loss",
    "train_error": "train/epoch_error",
    "test_loss": "test/loss",
    "test_error": "test/error",
    "val_loss": "val/loss",
    "val_error": "val/error",
    "images_per_s": "speed/images_per_s",
}
Step = tuple[int, float, float, float]  # (step, lr, loss, error %), as the engine logs every step


class TensorBoard:
    """One session's writer; ``write`` after each evaluation, ``close`` at the end with the run's summary."""

    def __init__(self, writer: Any, after_step: int = 0, folder: int | None = None) -> None:
        self.writer = writer
        self.written = after_step  # the last step already in the event files (a resumed run's checkpoint)
        self.folder = folder  # the descriptor of the checked folder the writer writes into, closed with it

    @classmethod
    def open(cls, directory: Path, after_step: int = 0) -> TensorBoard:
        """A writer into ``directory``, made and checked by the write guard (see the module docstring)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                "(or pip install tensorboard)"
            ) from None
        folder, reached = guard.open_folder(directory)
        try:
            return cls(SummaryWriter(log_dir=reached), after_step, folder)
        except BaseException:
            os.close(folder)
            raise

    def write(self, row: dict[str, Any], steps: Iterable[Step] = ()) -> None:
        """The steps not written yet, then the evaluation's figures at its step."""
        for step, lr, loss, error in steps:
            if step <= self.written:
                continue
            for tag, value in (("train/loss", loss), ("train/error", error), ("train/lr", lr)):
                if math.isfinite(value):
                    self.writer.add_scalar(tag, value, global_step=step)
            self.written = step
        for key, tag in EPOCH_TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, global_step=row["step"])
        self.writer.flush()

    def close(self, config: Any = None, summary: dict[str, Any] | None = None) -> None:
        """Write the hyperparameters and the result (when the session ended with a summary), then close."""
        if config is not None and summary is not None:
            self._hparams(config, summary)
        self.writer.close()
        if self.folder is not None:
            os.close(self.folder)
            self.folder = None

    def _hparams(self, config: Any, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {"model": config.model, "data": summary["data"], "checkpoint": summary["checkpoint"]}
        values |= {f"recipe/{k}": _plain(v) for k, v in dataclasses.asdict(config.recipe).items() if k != "description"}
        metrics = {"hparam/test_error": summary["test_error"]}
        if "best" in summary:
            metrics["hparam/val_error"] = summary["best"]["val_error"]
        metrics = {tag: value for tag, value in metrics.items() if math.isfinite(value)}
        for summary_proto in hparams(values, metrics):  # the experiment, its session's start and end
            self.writer.file_writer.add_summary(summary_proto)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=summary["steps"])


def _plain(value: Any) -> bool | int | float | str:
    """A value the HParams tab shows: numbers, text and flags as they are, anything else (a tuple, None) as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)
