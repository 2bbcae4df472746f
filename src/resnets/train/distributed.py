"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

Active when WORLD_SIZE > 1. Each epoch's batch order is the same on every rank (the loader is a pure
function of seed and epoch); rank r takes batches r, r + W, r + 2W, ... (what DistributedSampler does
with samples, done with whole batches), so the global batch is W times the recipe's. Only rank 0 writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from resnets.errors import ConfigError


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch_dist.init_process_group(backend=backend)
        return cls(rank, local, world)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        if torch.cuda.is_available() and requested in ("auto", "cuda"):
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        if requested not in ("auto", "cpu"):
            raise ConfigError(f"under torchrun give --device auto, cuda or cpu, not {requested!r}")
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The plain model inside torch.compile's and DDP's wrappers, whose state-dict keys are the weight format."""
        compiled = sys.modules.get("torch._dynamo.eval_frame")  # loaded once anything is compiled, not before
        if compiled is not None and isinstance(model, compiled.OptimizedModule):
            model = model._orig_mod
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def batches(self, loader, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``epoch`` from its ``start``-th on; only those are built (and augmented)."""
        if not self.active:
            yield from loader.epoch_batches(epoch, start=start)
            return
        order = loader.order(epoch)
        for index in range(start * self.world_size + self.rank, len(loader), self.world_size):
            yield loader.batch(epoch, index, order)

    def agree(self, flag: bool) -> bool:
        """Whether any rank raised ``flag``: a SIGTERM that reached one rank stops all at the same step.

        Without it the signalled rank left the gradient all-reduce and the others died with gloo's
        "Connection closed by peer". One tiny all-reduce per step, next to DDP's gradient ones.
        """
        if not self.active:
            return flag
        value = torch.tensor([1 if flag else 0], device=self._collective_device())
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch_dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
