"""Gradient checkpointing: the same training step with less stored, on every model family.

A checkpointed step must give the same loss, gradients and BN running statistics as a plain one (the
recomputation runs BN in train mode a second time, and drop path draws again), must store far less for
backward, and must stay invisible to instruments that read units.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from resnets import create_model, get_model_entry, list_models
from resnets.bench.memory import saved_bytes
from resnets.layers.checkpointing import checkpoint_module, frozen_running_stats
from resnets.models.base import SkipNetwork
from tests.helpers import big_twin_marks


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP workers spin against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Models above either size run under the slow marker (about 35 s more on one core; the rest take about 20 s).
SLOW_PARAMS, SLOW_UNITS = 20e6, 100


#: Tiny variants with every kind of randomness and block, through the registry's options.
VARIANTS = {
    "basic_drop_path": ("resnet20", {"layers": (1, 1, 1), "drop_path_rate": 0.5}),
    "bottleneck_se": ("resnext29_8x64d", {"layers": (1, 1, 1), "widths": (8, 16, 32), "se_reduction": 4}),
    "preact_dropout": ("wrn_16_8", {"widths": (8, 16, 32), "dropout": 0.3, "drop_path_rate": 0.5}),
    "preact_bottleneck": ("preact_resnet164", {"layers": (1, 1, 1), "drop_path_rate": 0.5}),
    "dense_dropout": ("densenet_bc_100_12", {"block_config": (2, 2, 2), "drop_rate": 0.3}),
    "vit_pre_drop_path": ("vit_tiny_patch4_32", {"depth": 2, "drop_path_rate": 0.5}),
}


def _input(name: str, batch: int = 2) -> torch.Tensor:
    """The registered input, images cut to 32 pixels (ImageNet layouts: five halvings) or 16 (CIFAR layouts: two),
    except where the model fixes its size (a Vision Transformer's token grid)."""
    entry = get_model_entry(name)
    size = entry.input_size
    if entry.input_kind == "image" and not hasattr(entry.config, "img_size"):
        side = 32 if max(size[1:]) > 64 else 16
        size = (size[0], side, side)
    return torch.randn(batch, *size)


def _step(model: nn.Module, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """One training step's forward and backward (no optimiser), from a fixed random state."""
    torch.manual_seed(seed)
    loss = F.cross_entropy(model(x), torch.arange(len(x)) % 3)
    loss.backward()
    return loss.detach()


def _assert_same_step(name: str, options: dict, batch: int = 2) -> None:
    plain = create_model(name, num_classes=5, **options).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    assert checkpointed.grad_checkpointing and not plain.grad_checkpointing
    x = _input(name, batch)
    torch.testing.assert_close(_step(checkpointed, x), _step(plain, x), rtol=1e-6, atol=1e-7)
    for (key, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")
    for (key, b), c in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        if key.endswith("num_batches_tracked"):
            assert int(c) == int(b) == 1, key
        else:
            torch.testing.assert_close(c, b, rtol=1e-6, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")


def _marks(name: str) -> list:
    return big_twin_marks(name, params=SLOW_PARAMS, units=SLOW_UNITS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in list_models()])
def test_every_model_steps_the_same_with_checkpointing(name: str) -> None:
    _assert_same_step(name, {})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_random_branches_repeat_in_the_recomputation(variant: str) -> None:
    """Drop path and dropout draw the same masks when the unit is recomputed (checkpoint restores the RNG)."""
    name, options = VARIANTS[variant]
    _assert_same_step(name, options, batch=4)


def test_checkpointing_only_while_training_with_grad(monkeypatch) -> None:
    """Evaluation and no-grad passes keep nothing for backward anyway: they run the unit once, as usual."""
    calls: list[int] = []

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return checkpoint_module(*args)

    monkeypatch.setattr("resnets.layers.skip_unit.checkpoint_module", counted)
    model = create_model("resnet20")
    model.set_grad_checkpointing(True)
    assert all(info.unit.grad_checkpointing for info in model.residual_blocks())
    x = torch.randn(2, 3, 16, 16)
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    assert not calls
    model(x)
    assert len(calls) == 9  # ResNet-20's nine units
    model.set_grad_checkpointing(False)
    model(x)
    assert len(calls) == 9 and not model.grad_checkpointing
    assert not any(info.unit.grad_checkpointing for info in model.residual_blocks())


def _unit_input_bytes(model: SkipNetwork, x: torch.Tensor) -> int:
    sizes: list[int] = []
    handles = [
        info.module.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].nbytes))
        for info in model.residual_blocks()
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return sum(sizes)


def test_checkpointing_keeps_only_each_units_input() -> None:
    """ResNet-110, 8 CIFAR images: a plain step keeps about 4 activations per unit (conv and BN outputs, the
    input), a checkpointed one the unit's input alone, plus the stem's and head's few tensors (measured: 3.8x)."""
    model = create_model("resnet110").train()
    x = torch.randn(8, 3, 32, 32)
    plain = saved_bytes(model, x)
    model.set_grad_checkpointing(True)
    checkpointed = saved_bytes(model, x)
    inputs = _unit_input_bytes(model, x)
    assert plain / checkpointed > 3.5
    assert inputs <= checkpointed <= 1.1 * inputs


def test_naive_recomputation_would_update_bn_twice() -> None:
    """What frozen_running_stats prevents: plain torch checkpoint counts a step twice in every BN it recomputes."""
    unit = create_model("resnet20").residual_blocks()[0].module.train()
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    checkpoint(unit, x, use_reentrant=False).sum().backward()
    assert int(unit.bn1.num_batches_tracked) == 2
    unit.bn1.num_batches_tracked.zero_()
    unit.grad_checkpointing = True
    unit(x).sum().backward()
    assert int(unit.bn1.num_batches_tracked) == 1


def test_frozen_running_stats_with_cumulative_average() -> None:
    """momentum=None (a cumulative average) is also held still, and the momentum comes back afterwards."""
    norm = nn.BatchNorm1d(3, momentum=None).train()
    norm(torch.randn(4, 3))
    before = (norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked))
    with frozen_running_stats(norm):
        norm(torch.randn(4, 3) * 5 + 2)
    assert norm.momentum is None
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert int(norm.num_batches_tracked) == before[2]


def test_taps_and_hooks_see_each_forward_once() -> None:
    """A tapped or hooked unit is not recomputed, so instruments count one call per step; the others still are."""
    model = create_model("resnet20").train()
    model.set_grad_checkpointing(True)
    blocks = model.residual_blocks()
    hook_calls: list[int] = []
    handle = blocks[2].module.register_forward_hook(lambda *_: hook_calls.append(1))
    with blocks[1].capture() as capture:
        assert blocks[1].unit.observed and blocks[2].unit.observed and not blocks[3].unit.observed
        _step(model, torch.randn(2, 3, 32, 32))
    handle.remove()
    assert capture.calls == 1
    assert len(hook_calls) == 1
    assert all(p.grad is not None for p in model.parameters())


def test_lesioned_unit_trains_the_same_with_checkpointing() -> None:
    plain = create_model("resnet20", num_classes=5).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    with plain.residual_blocks()[4].lesioned(), checkpointed.residual_blocks()[4].lesioned():
        torch.testing.assert_close(_step(checkpointed, x), _step(plain, x), rtol=1e-6, atol=1e-7)
    for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)
    lesioned_conv = checkpointed.residual_blocks()[4].module.conv1.weight.grad
    assert lesioned_conv is None or not lesioned_conv.any()  # the deleted branch gets no gradient
