"""Parameters, multiply-adds and per-stage shapes of a model, computed rather than typed in.

Multiply-adds (MACs) are counted by ``torch.utils.flop_counter`` over convolutions, matrix products and
attention, which is how the papers count them (He et al. 2015 Table 1: 3.6G FLOPs, i.e. multiply-adds,
for ResNet-34 with the stride-2 conv1 ... ); elementwise ops (norms, activations, additions) are not
counted. Models are built on the meta device, so even ResNet-1202 costs no memory and no arithmetic.

Building a model is still Python work (ResNet-1202 has 3,600 modules: one to two seconds; all 56 registered
models about 10 s), so their figures are kept in the user cache (:func:`registry_counts`), keyed by everything
they depend on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

import resnets
from resnets.data.cache import cache_dir
from resnets.errors import ResnetsError
from resnets.io.atomic import atomic_write_text
from resnets.models.base import SkipNetwork
from resnets.models.registry import ModelEntry, create_model, get_model_entry

log = logging.getLogger("resnets.models")
COUNTS_FORMAT = 2  # bump when the cached figures change meaning (2: units counted too)


@dataclass(frozen=True)
class StageRow:
    """One row of a model summary; shapes are without the batch dimension."""

    name: str
    input_shape: tuple[int, ...]  # a stage's: what its first unit receives (after any transition before it)
    output_shape: tuple[int, ...]  # a stage's: what its last unit hands on (a dense block's whole concatenation)
    params: int
    macs: int


@dataclass(frozen=True)
class ModelCounts:
    """Size and cost of a registered model at its default input size and number of classes."""

    params: int
    macs: int | None  # multiply-adds of one sample; None where they were not asked for
    units: int = 0  # skip-connection units (residual_blocks())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs_of(counter: FlopCounterMode) -> int:
    return counter.get_total_flops() // 2  # the counter counts a multiply-add as two FLOPs


def build_meta(name: str, **kwargs) -> SkipNetwork:
    """The named model on the meta device: shapes and parameters without memory or initialisation cost."""
    with torch.device("meta"), _SkipInit():
        return create_model(name, **kwargs).eval()


_FILLS = frozenset({"zero_", "fill_", "normal_", "uniform_"})  # what reset_parameters and init call


class _SkipInit(TorchFunctionMode):
    """Initialisers do nothing on meta tensors, yet each costs a trip through torch's Python reference
    implementations (ResNet-1202's 1,201 ``kaiming_normal_`` calls took 1.8 s of its 3 s build): an in-place
    initialiser (a torch.nn.init function or a tensor fill) on a meta tensor is answered with the tensor itself."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # torch's protocol
        target = args[0] if args else None
        initialiser = getattr(func, "__module__", "") == "torch.nn.init" or getattr(func, "__name__", "") in _FILLS
        if initialiser and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **(kwargs or {}))


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
    x = torch.zeros((1, *input_size), device=device)
    model.check_input(x)  # one message naming the expected shape, not a conv's complaint deep inside
    inputs: dict[int, tuple[int, ...]] = {}  # stage -> what its first unit receives
    outputs: dict[int, tuple[int, ...]] = {}  # stage -> what its last unit hands on
    hooks = [
        b.module.register_forward_hook(lambda m, i, o, s=b.stage: outputs.__setitem__(s, _unit_output(m, i, o)))
        for b in blocks
    ]
    firsts = {b.stage: b for b in reversed(blocks)}.values()
    hooks += [
        b.module.register_forward_pre_hook(lambda m, args, s=b.stage: inputs.__setitem__(s, _joined(args[0])))
        for b in firsts
    ]
    counter = FlopCounterMode(display=False, depth=None)
    head_modules: list[nn.Module] = []
    try:
        with torch.no_grad():
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
        rows.append(StageRow(f"stage {stage} ({len(members)} units)", inputs[stage], outputs[stage], params, macs))
    head_params = sum(count_parameters(m) for m in {id(m): m for m in head_modules}.values() if not list(m.children()))
    feature_shape = tuple(features.shape[1:])
    head = StageRow("head", feature_shape, tuple(logits.shape[1:]), head_params, _macs_of(head_counter))
    stem_params = count_parameters(model) - sum(r.params for r in rows) - head.params
    stem_macs = feature_macs - sum(r.macs for r in rows)
    stem_out = rows[0].input_shape if rows else feature_shape  # the stem hands on what the first unit receives
    stem = StageRow("stem + transitions", tuple(input_size), stem_out, stem_params, stem_macs)
    return [stem, *rows, head]


class _Trunk(nn.Module):
    def __init__(self, model: SkipNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _joined(tensors: torch.Tensor | Sequence[torch.Tensor]) -> tuple[int, ...]:
    """Shape (without batch) of a tensor, or of a list of feature maps joined on channels (a dense layer's input)."""
    if isinstance(tensors, torch.Tensor):
        return tuple(tensors.shape[1:])
    first = tensors[0]
    return (sum(int(t.shape[1]) for t in tensors), *first.shape[2:])


def _unit_output(unit: nn.Module, args: tuple, output: torch.Tensor) -> tuple[int, ...]:
    """What a unit hands on: its output, or for a concatenating unit (a dense layer, which returns only its new
    maps) its inputs and output joined, as its block passes them on."""
    if getattr(unit, "join", "add") == "concat":
        inputs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
        return _joined([*inputs, output])
    return tuple(output.shape[1:])


def format_count(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def registry_counts(names: Sequence[str], *, macs: bool = False, use_cache: bool = True) -> dict[str, ModelCounts]:
    """Parameters, and multiply-adds when ``macs`` is set, of registered models at their default size.

    Figures are computed (on the meta device) the first time and then read from ``<cache_dir>/model-counts.json``
    (``$RESNETS_CACHE_DIR`` or ``~/.cache/resnets``). The file is only trusted for the same package and torch
    versions, the same model and layer sources (a digest of their text) and the same model config, so an edit to
    a block or a variant's config counts again instead of showing an old figure.
    """
    path = cache_dir() / "model-counts.json"
    key = _code_key()
    stored = _read_counts(path, key) if use_cache else {}
    counts, changed = {}, False
    for name in names:
        entry = get_model_entry(name)
        row = stored.get(name)
        if row is None or row.get("signature") != _signature(entry):
            row = {"signature": _signature(entry)}
        if "params" not in row or "units" not in row or (macs and row.get("macs") is None):
            model = build_meta(name)
            row["params"], row["units"] = count_parameters(model), len(model.residual_blocks())
            if macs:
                row["macs"] = count_macs(model, default_input(model, name))
            stored[name], changed = row, True
        counts[name] = ModelCounts(int(row["params"]), int(row["macs"]) if macs else None, int(row["units"]))
    if changed and use_cache:
        _write_counts(path, key, stored)
    return counts


def _signature(entry: ModelEntry) -> str:
    """Everything about a registered model that its figures depend on, besides the code."""
    return f"{entry.cls.__qualname__} {entry.config!r} classes={entry.num_classes} input={entry.input_size}"


def _code_key() -> str:
    """A digest of the package and torch versions and of the source text that defines model structure."""
    digest = hashlib.sha256(f"{COUNTS_FORMAT} {resnets.__version__} {torch.__version__}".encode())
    package = Path(resnets.__file__).parent
    for source in sorted([*(package / "models").glob("*.py"), *(package / "layers").glob("*.py")]):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:24]


def _read_counts(path: Path, key: str) -> dict[str, dict[str, Any]]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("models"), dict):
        return {}  # another version or other sources: count everything again
    return {name: row for name, row in stored["models"].items() if isinstance(row, dict)}


def _write_counts(path: Path, key: str, rows: dict[str, dict[str, Any]]) -> None:
    """Store the figures, atomically through the write guard; a cache that cannot be written (read-only home, full
    disk, a folder the guard refuses) only costs speed."""
    try:
        atomic_write_text(path, json.dumps({"key": key, "models": rows}, indent=1))
    except (OSError, ResnetsError) as error:
        log.debug("could not write the model-count cache %s: %s", path, error)
