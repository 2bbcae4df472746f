"""Tests generated from the registry: every unit of every model answers the same interface.

For every model, (a) lesioning a unit whose branch is not zero changes the model's output, and leaving the
``with`` block gives back the exact output; (b) ``has_shortcut`` and ``changes_shape`` agree with what
``capture()`` and the unit's input and output show; (c) exactly the plain units that change the shape refuse
a lesion. Models run in train mode (batch statistics: an untrained ResNet-1202 overflows in eval mode) on a
batch of 2 small inputs; one forward pass with every unit captured reads them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from resnets import create_model, get_model_entry, list_models
from resnets.errors import InputShapeError, LesionError
from resnets.layers.skip_unit import UnitCapture
from resnets.models import BlockInfo, SkipNetwork, capture_units
from tests.helpers import big_twin_marks

MAX_ALL_UNITS = 40  # models with more units test a deterministic sample of about SAMPLE_SIZE
SAMPLE_SIZE = 16
#: Image sides tried in turn; the first that the model takes and that leaves a final map of 2x2 or more is used
#: (on a 1x1 map, train-mode batch norm over 2 samples outputs +-1 and hides what happened upstream).
IMAGE_SIDES = (8, 16, 32, 48, 64)

Shape = tuple[int, ...]

#: Units that refuse a lesion: plain (no shortcut) and changing the shape.
EXPECTED_REFUSALS = {
    "plain18": ["layer2.0", "layer3.0", "layer4.0"],
    "plain20": ["layer2.0", "layer3.0"],
    "plain_ll_cifar20": ["stem", "layer2.0", "layer3.0"],
    "resmlp_plain_20": [],  # every layer keeps the width: each can become the identity
    "resnet20": [],
}


def _sample(blocks: list[BlockInfo]) -> list[BlockInfo]:
    """Every unit of a small model; else the first and last of each stage plus evenly spaced ones."""
    if len(blocks) <= MAX_ALL_UNITS:
        return blocks
    ends = set()
    for stage in sorted({b.stage for b in blocks}):
        members = [b.index for b in blocks if b.stage == stage]
        ends |= {members[0], members[-1]}
    spaced = max(SAMPLE_SIZE - len(ends), 2)
    picked = ends | {int((i + 0.5) * len(blocks) / spaced) for i in range(spaced)}
    return [blocks[i] for i in sorted(picked)]


def _input(name: str, model: SkipNetwork) -> torch.Tensor:
    """A batch of 2 of the smallest images that keep a 2x2 final map (8 pixels for CIFAR nets, 48 for ImageNet
    ResNets, 64 for ImageNet DenseNets); vectors and sequences at their registered size."""
    size = get_model_entry(name).input_size
    if get_model_entry(name).input_kind != "image":
        return torch.randn(2, *size)
    for side in IMAGE_SIDES:
        x = torch.randn(2, size[0], side, side)
        try:
            model.check_input(x)
            with torch.no_grad():
                features = model.forward_features(x[:1])  # one sample: half the cost of a trial
        except (InputShapeError, ValueError, RuntimeError):  # a ViT fixes its image size; pools and BN need pixels
            continue
        if features.dim() != 4 or features.shape[-1] * features.shape[-2] >= 4:
            return x
    return torch.randn(2, *size)


def _params(name: str) -> list[Any]:
    return [pytest.param(name, marks=big_twin_marks(name, params=30e6, units=150))]


@dataclass
class Case:
    """One model, its input, its output and what one forward pass showed of each sampled unit."""

    name: str
    model: SkipNetwork
    x: torch.Tensor
    output: torch.Tensor  # with nothing tapped, lesioned or scaled
    blocks: list[BlockInfo]
    sample: list[BlockInfo]
    captures: dict[int, UnitCapture] = field(default_factory=dict)  # by BlockInfo.index
    captured_output: torch.Tensor | None = None  # the output while the sampled units were captured
    shapes: dict[int, tuple[Shape, Shape]] = field(default_factory=dict)  # index -> unit's (input, output) shape


def _forward(case: Case) -> torch.Tensor:
    with torch.no_grad():
        return case.model(case.x)


def _io_shapes(info: BlockInfo, args: tuple, output: torch.Tensor) -> tuple[Shape, Shape]:
    """Input and output shape of the unit; a dense layer's are its block's before and after it."""
    inputs = args[0]
    if info.unit.join == "concat":  # the earlier maps, concatenated with the new ones by the block
        before = torch.cat(inputs, 1).shape
        return tuple(before), (before[0], before[1] + output.shape[1], *before[2:])
    x = inputs[-1] if isinstance(inputs, list) else inputs  # a multi-skip layer's main input is a^{l-1}
    return tuple(x.shape), tuple(output.shape)


@pytest.fixture(scope="module", params=[p for name in list_models() for p in _params(name)])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    torch.manual_seed(0)
    model = create_model(request.param).train()
    blocks = model.residual_blocks()
    case = Case(request.param, model, _input(request.param, model), torch.empty(0), blocks, _sample(blocks))
    hooks = [
        info.module.register_forward_hook(
            lambda m, args, out, info=info: case.shapes.__setitem__(info.index, _io_shapes(info, args, out))
        )
        for info in case.sample
    ]
    try:
        with capture_units(case.sample) as captures:
            case.captured_output = _forward(case)
    finally:
        for hook in hooks:
            hook.remove()
    case.captures = captures
    case.output = _forward(case)
    yield case


def test_lesion_changes_the_output_and_restoring_gives_it_back(case: Case) -> None:
    assert torch.isfinite(case.output).all()
    tested = 0
    for info in case.sample:
        if not info.has_shortcut and info.changes_shape:
            continue  # refuses: see test_only_plain_units_that_change_the_shape_refuse_a_lesion
        if torch.count_nonzero(case.captures[info.index].branch) == 0:
            continue
        with info.lesioned():
            assert info.unit.is_lesioned
            lesioned = _forward(case)
        assert not info.unit.is_lesioned and info.unit.lesioned_branches == ()
        assert lesioned.shape == case.output.shape
        assert not torch.equal(lesioned, case.output), f"lesioning {info.name} changed nothing"
        if info.num_branches > 1 and tested < 2:
            _check_branch_lesions(case, info, lesioned)
        tested += 1
    assert tested >= len(case.sample) // 2, f"only {tested} of {len(case.sample)} units could be lesioned"
    assert torch.equal(_forward(case), case.output), "every lesion restored on exit"


def _check_branch_lesions(case: Case, info: BlockInfo, whole: torch.Tensor) -> None:
    """Each branch lesioned alone changes the output differently; all of them lesioned is the unit lesioned."""
    outputs = []
    for branch in range(info.num_branches):
        with info.lesioned(branch):
            assert info.unit.lesioned_branches == (branch,) and not info.unit.is_lesioned
            outputs.append(_forward(case))
    assert all(not torch.equal(out, case.output) and not torch.equal(out, whole) for out in outputs)
    assert not torch.equal(outputs[0], outputs[1])
    with info.lesioned(0), info.lesioned(1):
        for branch in range(2, info.num_branches):
            info.unit.lesion(branch)
        assert info.unit.is_lesioned
        assert torch.equal(_forward(case), whole)
    assert info.unit.lesioned_branches == ()


def test_scaling_restores_the_scale_and_scale_zero_is_the_lesion(case: Case) -> None:
    with_shortcut = [info for info in case.sample if info.has_shortcut]
    info = (with_shortcut or case.sample)[len(with_shortcut or case.sample) // 2]
    before = info.unit.residual_scale
    seen: list[torch.Tensor] = []
    hook = info.module.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))
    try:
        full = _forward(case)
        with info.scaled(0.5):
            assert info.unit.residual_scale == 0.5
            halved = _forward(case)
    finally:
        hook.remove()
    assert info.unit.residual_scale == before
    assert not torch.equal(seen[1], seen[0])  # the unit's own output changed
    if info.has_shortcut:
        assert not torch.equal(halved, case.output)
    else:  # a plain unit's output halves: a conv then a batch-statistics norm downstream may absorb it (speedrun)
        assert torch.allclose(seen[1], 0.5 * seen[0]) and torch.equal(full, case.output)
    if info.has_shortcut:  # scale 0 leaves post(shortcut), as a lesion; a plain unit would give post(0)
        with info.lesioned():
            lesioned = _forward(case)
        with info.scaled(0.0):
            assert torch.equal(_forward(case), lesioned)


def test_declared_structure_agrees_with_the_capture(case: Case) -> None:
    # Taps only read: the output is the same (up to rounding where a family fuses its uninstrumented sum).
    assert torch.allclose(case.captured_output, case.output, rtol=1e-4, atol=1e-5)
    for info in case.sample:
        capture, (in_shape, out_shape) = case.captures[info.index], case.shapes[info.index]
        assert capture.calls == 1, info.name
        assert (capture.shortcut is not None) == info.has_shortcut, info.name
        assert (in_shape != out_shape) == info.changes_shape, (info.name, in_shape, out_shape)
        branch = tuple(capture.branch.shape)
        if info.unit.join == "concat":  # the shortcut is the block's input; the branch, the added channels
            assert tuple(capture.shortcut.shape) == in_shape, info.name
            assert branch[1] == out_shape[1] - in_shape[1] > 0, info.name
        elif info.has_shortcut:  # summed: the branch and the shortcut have the output's shape
            assert branch == tuple(capture.shortcut.shape) == out_shape, info.name
            assert (branch != in_shape) == info.changes_shape, info.name
        assert torch.isfinite(capture.branch).all(), info.name


def test_only_plain_units_that_change_the_shape_refuse_a_lesion(case: Case) -> None:
    refused = []
    for info in case.blocks:
        try:
            with info.lesioned():
                pass
        except LesionError as error:
            assert info.name in str(error) and "no shortcut" in str(error)
            refused.append(info.name)
        assert not info.unit.is_lesioned and info.unit.lesioned_branches == ()
    assert refused == [info.name for info in case.blocks if not info.has_shortcut and info.changes_shape]
    if case.name in EXPECTED_REFUSALS:
        assert refused == EXPECTED_REFUSALS[case.name]
