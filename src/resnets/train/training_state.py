"""Everything a run changes as it trains, as one object saved and restored as one (flax's ``TrainState``).

The model being trained, the optimiser, the learning-rate schedule, the grad scaler, the weight EMA, the lookahead
average, the counters of :class:`~resnets.train.state.RunCounters` and the random generators: ``state_dict()`` is
what ``last.state.pt`` holds beside the weight file, and ``load_state_dict()`` puts a resumed run exactly where the
checkpoint left it, or says in one line why it cannot. The weight file itself holds :attr:`weights_model`: the
EMA where there is one (the weights being trained then travel in the state as ``raw_weights``), else the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.runs.checkpoint import weights_for_saving
from resnets.train.ema import weight_ema
from resnets.train.lookahead import Lookahead
from resnets.train.optim import make_optimizer
from resnets.train.recipes import Recipe
from resnets.train.schedule import LRSchedule, weighted_depth
from resnets.train.state import RunCounters, rng_state, set_rng_state


class TrainingState:
    """The model, optimiser, schedule, scaler, EMA, lookahead, counters and RNG of one run."""

    def __init__(
        self,
        model: nn.Module,
        recipe: Recipe,
        *,
        steps_per_epoch: int,
        last_step: int,
        world_size: int = 1,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model  # the plain model (no DDP or compile wrapper): its state dict is the weight format
        self.optimizer = make_optimizer(model, recipe)
        self.schedule = LRSchedule(
            recipe, steps_per_epoch=steps_per_epoch, total_steps=last_step, depth=weighted_depth(model)
        )
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        self.ema = weight_ema(model, recipe.ema_decay) if recipe.ema_decay > 0 else None  # evaluated and saved
        self.lookahead = None
        if recipe.lookahead_every:  # its averaging grows towards the schedule's end, wherever this session stops
            start = round(recipe.lookahead_start_epochs * steps_per_epoch)
            self.lookahead = Lookahead(
                recipe.lookahead_every, recipe.lookahead_decay, recipe.lookahead_power, start, self.schedule.horizon
            )
        self.counters = RunCounters()
        self.world_size = world_size  # the global batch is the recipe's times this

    @property
    def weights_model(self) -> nn.Module:
        """The model whose weights are measured and saved as the run's weights: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def after_step(self) -> None:
        """What follows each optimiser step: the EMA update and the lookahead's pull (on its steps)."""
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.lookahead is not None:
            self.lookahead.after_step(self.model, self.counters.step)

    def end_epoch(self) -> None:
        """An epoch (or the schedule, inside one) ends: the lookahead sets the weights to its average."""
        if self.lookahead is not None:
            self.lookahead.end_epoch(self.model)

    @property
    def schedule_done(self) -> bool:
        """Whether the run has reached its schedule's end (not an early stop on the same curve, to be resumed)."""
        return self.counters.step >= self.schedule.horizon

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's state (``last.state.pt``): everything but the weight file."""
        c = self.counters
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(),
            "train": c.to_dict(),
            "step": c.step,
            "epoch": c.epoch,
            "batch": c.batch,
            "world_size": self.world_size,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:  # the weight file holds the average; resuming also needs the weights being trained
            state["raw_weights"] = weights_for_saving(self.model)
        if self.lookahead is not None:
            state["lookahead"] = self.lookahead.state_dict()
        return state

    def load_state_dict(self, saved: dict[str, Any], where: str) -> None:
        """Continue from ``saved``, after the weight file was loaded into :attr:`model`; ``where`` names the run
        in errors. A state that cannot continue this run is a ConfigError saying why."""
        saved_world = saved.get("world_size")  # None in checkpoints older than this check
        if saved_world is not None and saved_world != self.world_size:
            raise ConfigError(
                f"{where!r} was trained by {saved_world} process(es) and is resumed by {self.world_size}: the global "
                f"batch (and so the run) would change; resume it with torchrun --nproc_per_node {saved_world}"
                + (" (or without torchrun)" if saved_world == 1 else "")
            )
        if self.ema is not None:  # the weight file held the average; the weights being trained are in the state
            self.ema.module.load_state_dict(self.model.state_dict())
        if "raw_weights" in saved:
            self.model.load_state_dict(saved["raw_weights"])
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as error:  # parameter groups of another shape
            raise ConfigError(
                f"the optimiser state in {where!r} does not fit this run's parameters ({error}); resume with the "
                "run's own model and recipe"
            ) from None
        self.schedule.load_state_dict(saved["schedule"])
        if "scaler" in saved and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved["scaler"])
        if self.lookahead is not None and "lookahead" in saved:
            self.lookahead.load_state_dict(saved["lookahead"])
        self.counters = RunCounters(**saved["train"])
        set_rng_state(saved["rng"])
