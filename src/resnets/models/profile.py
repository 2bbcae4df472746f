"""Parameters, multiply-adds and per-stage shapes of a model, computed rather than typed in.

Multiply-adds (MACs) are counted by ``torch.utils.flop_counter`` over convolutions, matrix products and
attention, which is how the papers count them (He et al. 2015 Table 1: 3.6G FLOPs, i.e. multiply-adds,
for ResNet-34 with the stride-2 conv1 ... ); elementwise ops (norms, activations, additions) are not
counted. Models are built on the meta device, so even ResNet-1202 costs no memory and no arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnets.models.base import SkipNetwork
from resnets.models.registry import create_model, get_model_entry


@dataclass(frozen=True)
class StageRow:
    """One row of a model summary."""

    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs_of(counter: FlopCounterMode) -> int:
    return counter.get_total_flops() // 2  # the counter counts a multiply-add as two FLOPs


def build_meta(name: str, **kwargs) -> SkipNetwork:
    """The named model on the meta device: shapes and parameters without memory or initialisation cost."""
    with torch.device("meta"):
        return create_model(name, **kwargs).eval()


def default_input(model: SkipNetwork, name: str) -> tuple[int, ...]:
    """The registered input size, with the channel (or feature) count the model was actually built with."""
    size = list(get_model_entry(name).input_size)
    size[0 if model.input_kind == "image" else -1] = model.in_channels
    return tuple(size)


def count_macs(model: SkipNetwork, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on one sample of ``input_size`` (without the batch dimension)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros((1, *input_size), device=device))
    return _macs_of(counter)


def summarize(model: SkipNetwork, input_size: tuple[int, ...]) -> list[StageRow]:
    """Rows for the stem (with any transitions between stages), each stage of residual units, and the head."""
    device = next(model.parameters()).device
    blocks = model.residual_blocks()
    stage_ids = sorted({b.stage for b in blocks})
    outputs: dict[int, tuple[int, ...]] = {}
    hooks = [
        b.module.register_forward_hook(lambda m, i, o, s=b.stage: outputs.__setitem__(s, tuple(o.shape[1:])))
        for b in blocks
    ]
    if blocks:  # the stem's output is what the first residual unit receives
        hooks.append(blocks[0].module.register_forward_pre_hook(lambda m, args: _record_input(outputs, args)))
    counter = FlopCounterMode(display=False, depth=None)
    head_modules: list[nn.Module] = []
    try:
        with torch.no_grad():
            x = torch.zeros((1, *input_size), device=device)
            with counter:  # through a wrapper module, so the counter names units "_Trunk.model.<name>"
                features = _Trunk(model)(x)
            feature_macs = _macs_of(counter)
            head_counter = FlopCounterMode(display=False)
            collect = nn.modules.module.register_module_forward_hook(lambda m, i, o: head_modules.append(m))
            try:
                with head_counter:
                    logits = model.forward_head(features)
            finally:
                collect.remove()
    finally:
        for hook in hooks:
            hook.remove()

    counts = counter.get_flop_counts()
    prefix = "_Trunk.model"
    rows = []
    for stage in stage_ids:
        members = [b for b in blocks if b.stage == stage]
        macs = sum(sum(counts.get(f"{prefix}.{b.name}", {}).values()) for b in members) // 2
        params = sum(count_parameters(b.module) for b in members)
        rows.append(StageRow(f"stage {stage} ({len(members)} units)", outputs[stage], params, macs))
    head_params = sum(count_parameters(m) for m in {id(m): m for m in head_modules}.values() if not list(m.children()))
    head = StageRow("head", tuple(logits.shape[1:]), head_params, _macs_of(head_counter))
    stem_params = count_parameters(model) - sum(r.params for r in rows) - head.params
    stem_macs = feature_macs - sum(r.macs for r in rows)
    stem = StageRow("stem + transitions", outputs.get(0, tuple(features.shape[1:])), stem_params, stem_macs)
    return [stem, *rows, head]


class _Trunk(nn.Module):
    def __init__(self, model: SkipNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _record_input(outputs: dict[int, tuple[int, ...]], args: tuple) -> None:
    first = args[0]
    if isinstance(first, (list, tuple)):  # dense layers receive the list of earlier feature maps
        first = torch.cat(list(first), 1)
    outputs[0] = tuple(first.shape[1:])


def format_count(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
