"""Where a run stands: step, position inside the epoch, running metrics, best result, and the RNGs.

Everything here goes into ``last.state.pt`` so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch


@dataclass
class RunCounters:
    """The counters of :class:`~resnets.train.training_state.TrainingState`: where the run stands."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches of the current epoch already trained
    loss_sum: float = 0.0  # running sums over the current epoch
    errors: int = 0
    seen: int = 0
    epoch_time_s: float = 0.0  # training time of the current epoch so far (no evaluation)
    wall_time_s: float = 0.0  # all sessions of the run together
    best_error: float = float("inf")  # best validation error, percent (runs without validation have no best)
    best_epoch: int = -1
    eval_views: int = 0  # samples evaluated so far, times the test-time views of each: the evaluations' compute

    def start_epoch(self) -> None:
        self.batch, self.loss_sum, self.errors, self.seen, self.epoch_time_s = 0, 0.0, 0, 0, 0.0

    @property
    def train_loss(self) -> float:
        return self.loss_sum / max(1, self.seen)

    @property
    def train_error(self) -> float:
        return 100.0 * self.errors / max(1, self.seen)

    def to_dict(self) -> dict:
        return asdict(self)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
