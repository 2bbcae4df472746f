"""Running a model's units in another order, and telling plain from residual nets, for lesion and iterative.

Veit et al. 2016 swap units within a stage; Greff et al. 2017 shuffle them to show that a stage's units refine
one estimate. :func:`rearranged` places unit modules through their parent containers (``BlockInfo.name`` names
the attribute), which works for any family whose forward pass reads its units from their containers; taps check
that the forward passes really ran the new order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from torch import nn

from resnets.errors import LesionError
from resnets.models import BlockInfo


@contextmanager
def rearranged(model: nn.Module, blocks: Sequence[BlockInfo], order: Sequence[int]) -> Iterator[None]:
    """Position i of ``blocks`` runs the unit ``blocks[order[i]]`` inside the ``with`` block (repeats allowed).

    The modules are placed through their parent containers (``BlockInfo.name`` names the attribute), which works
    for any family whose forward pass reads its units from their containers; taps check that the forward passes
    inside the block ran the units in the new order, and the original modules come back on exit.
    """
    if len(order) != len(blocks):
        raise ValueError(f"order has {len(order)} entries for {len(blocks)} units")
    moved = [i for i, j in enumerate(order) if j != i]
    for i in moved:
        here, there = blocks[i], blocks[order[i]]
        if here.unit.io_shape != there.unit.io_shape:
            raise LesionError(
                f"cannot put unit {there.name!r} ({there.unit.io_shape}) at {here.name!r} ({here.unit.io_shape}): "
                "only units of equal input and output shape can exchange positions"
            )
    places = [_parent(model, blocks[i].name) for i in moved]
    seen: list[int] = []
    with ExitStack() as stack:
        for info in blocks:
            stack.enter_context(info.unit.tapped(lambda _b, _s, k=info.index: seen.append(k)))
        try:
            for (parent, child), i in zip(places, moved):
                setattr(parent, child, blocks[order[i]].module)
            yield
        finally:
            for (parent, child), i in zip(places, moved):
                setattr(parent, child, blocks[i].module)
    expected = [blocks[j].index for j in order]
    if seen and seen != expected * (len(seen) // len(expected)):
        raise RuntimeError(
            f"{type(model).__name__} did not run its units in the rearranged order (ran {seen[: len(expected)]}, "
            f"expected {expected}): its forward pass does not read the units from their containers"
        )


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


def is_plain(blocks: Sequence[BlockInfo]) -> bool:
    """A net none of whose units has a shortcut (the plain twin)."""
    return not any(b.has_shortcut for b in blocks)


def is_residual(blocks: Sequence[BlockInfo]) -> bool:
    """A net all of whose units have a shortcut (residual or highway)."""
    return all(b.has_shortcut for b in blocks)
