"""Optional TensorBoard event files: the epoch metrics as scalars, when ``tensorboard`` is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnets.errors import ConfigError

SCALARS = ("lr", "train_loss", "train_error", "test_loss", "test_error", "val_loss", "val_error", "images_per_s")


class TensorBoard:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, directory: Path) -> TensorBoard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'resnets[tensorboard]'"
            ) from None
        return cls(SummaryWriter(log_dir=str(directory)))

    def write(self, row: dict[str, Any]) -> None:
        """One point per metric at the row's step, so curves from resumed runs join up."""
        for key in SCALARS:
            if row.get(key) is not None:
                self.writer.add_scalar(key, row[key], global_step=row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
