"""Lookahead to a running average: every few steps the weights move to an average of themselves, then train on.

Zhang et al. 2019 ("Lookahead Optimizer: k steps forward, 1 step back") pull slow weights toward fast ones every
k steps; Jordan's airbench speedruns do it with an exponential average of the weights and buffers that grows
stronger towards the end: at every ``every``-th step from ``start_step`` on, with t the step and T the last,

    average <- lerp(average, weights, 1 - rho),  rho = decay^every * (t / T)^power;   weights <- average,

and at the end of every epoch the weights are set to the average once more. Early pulls (small rho) barely
average; the last ones average over the recent ~1 / (1 - decay) steps, which smooths away the noise of the
final high-lr steps without a separate evaluated copy (compare the weight EMA of ``ema_decay``, which never
feeds back into training).

The average is part of a run's state: it is saved with each checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    """The running average of a model's floating-point parameters and buffers; see the module docstring."""

    def __init__(self, every: int, decay: float, power: float, start_step: int, last_step: int) -> None:
        self.every, self.decay, self.power = every, decay, power
        self.start_step, self.last_step = start_step, max(1, last_step)
        self.average: dict[str, torch.Tensor] | None = None  # None until the first pull

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after optimiser step ``step`` (1-based): pull on the steps the schedule names."""
        if step < self.start_step or step % self.every:
            return
        if self.average is None:  # the first pull starts the average from the weights as they are
            self.average = {k: v.detach().clone() for k, v in _floating(model).items()}
            return
        rho = self.decay**self.every * (step / self.last_step) ** self.power
        self._pull(model, rho)

    def end_epoch(self, model: nn.Module) -> None:
        """Set the weights to the average (once there is one), as at every epoch's end."""
        if self.average is not None:
            self._pull(model, 1.0)

    @torch.no_grad()
    def _pull(self, model: nn.Module, rho: float) -> None:
        for name, tensor in _floating(model).items():
            average = self.average[name]
            average.lerp_(tensor, 1.0 - rho)
            tensor.copy_(average)

    def state_dict(self) -> dict:
        return {"average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.average = state["average"]


def _floating(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers that an average can hold (BN's running statistics too; not its batch counter)."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
