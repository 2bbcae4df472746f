"""The fast inference path: the eager model's predictions, computed the way the hardware likes them.

Each step is a switch, measured by ``resnets bench`` (the README lists what each bought):

- **conv-BN folding.** In eval mode a BatchNorm is a per-channel affine map, so it folds into the
  convolution (or linear layer) that feeds it: one memory-bound pass fewer per layer, same arithmetic up to
  float rounding. The pairs are found by watching one forward pass (which module's output each BatchNorm
  reads), so every family is handled without a per-family table, and the folded copy is checked against the
  original on that batch before it is used.
- **channels_last**, the layout oneDNN and cuDNN convolutions run natively.
- **bf16 autocast** where the run trained with it (hardware with native bf16; see ``resnets.device``).
- **torch.compile with freezing**: the weights become constants, inductor fuses conv + bias + ReLU + add and
  prepacks the weights for oneDNN. It costs 3-13 s once on a CPU for 10-15% over the folded eager model
  (``resnets bench``), so ``compile=None`` ("auto") compiles only jobs big enough to win that back
  (:data:`AUTO_COMPILE_FLOPS`) and only where a C++ compiler is installed.

The original model is never modified: the fast model is a copy, in eval mode, for inference only.
"""

from __future__ import annotations

import copy
import itertools
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from resnets.device import Precision
from resnets.errors import ConfigError
from resnets.tta import TestTimeAugmentation

NO_TTA = TestTimeAugmentation()

#: Auto mode compiles a job of at least this many FLOPs (2 x MACs x images): about three minutes of eager work
#: on a 2-core CPU (~170 GFLOP/s), where compiling (3-13 s) then running 10-15% faster (resnets bench, resnet50
#: and resnet56 against the folded eager model) wins its cost back.
AUTO_COMPILE_FLOPS = 3e13

#: The folded copy must reproduce the original's logits to this, times max(1, max |logits|) (float rounding).
FOLD_TOLERANCE = 1e-3

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Agreement:
    """How closely a fast model reproduces the reference on one batch: the correctness guard's figures."""

    top1: float  # fraction of samples whose predicted class is the same
    max_abs_diff: float  # max |fast - reference| over the logits
    max_abs_logit: float  # max |reference|: the scale the difference is judged against

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(1.0, self.max_abs_logit)


@torch.no_grad()
def agreement(reference: nn.Module, fast: nn.Module, x: torch.Tensor) -> Agreement:
    """Compare ``fast`` with ``reference`` (run in fp32) on the batch ``x``."""
    expected = reference(x).float()
    got = fast(x).float()
    return Agreement(
        top1=float((got.argmax(1) == expected.argmax(1)).float().mean()),
        max_abs_diff=float((got - expected).abs().max()),
        max_abs_logit=float(expected.abs().max()),
    )


class _Readers(TorchFunctionMode):
    """Counts, for each watched tensor, the torch functions that read it and return a tensor.

    Functions returning no tensor (``dim``, ``size``, ``shape``) only look at metadata and are not reads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, torch.Tensor] = {}  # id -> tensor, kept alive so that ids stay unique
        self.reads: Counter[int] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # torch's protocol
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if any(isinstance(leaf, torch.Tensor) for leaf in tree_leaves(result)):
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, torch.Tensor) and id(leaf) in self.watched:
                    self.reads[id(leaf)] += 1
        return result


def find_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(layer, BatchNorm) names where the BatchNorm is the only reader of the layer's output, in one pass.

    A pair is kept only when every call of the layer is followed by the BatchNorm reading exactly that
    output and nothing else reading it (a stem conv whose output is both a pre-activation BatchNorm's input
    and the identity shortcut is not folded), so a layer shared by several paths, or a BatchNorm fed by
    something else, is left alone.
    """
    names = {module: name for name, module in model.named_modules()}
    last: dict[str, object] = {}
    calls: Counter[str] = Counter()
    seen: defaultdict[tuple[str, str], list[int]] = defaultdict(list)  # pair -> ids of the outputs it joined
    readers = _Readers()
    handles = []

    def after_layer(module: nn.Module, _: tuple, output: torch.Tensor) -> None:
        calls[names[module]] += 1
        last["layer"], last["output"] = names[module], output
        readers.watched[id(output)] = output

    def before_norm(module: nn.Module, inputs: tuple) -> None:
        calls[names[module]] += 1
        output = last.get("output")
        if inputs and output is inputs[0]:
            seen[(str(last["layer"]), names[module])].append(id(output))

    for module in names:
        if isinstance(module, (*_CONVS, nn.Linear)):
            handles.append(module.register_forward_hook(after_layer))
        elif isinstance(module, _NORMS) and module.track_running_stats and module.running_mean is not None:
            handles.append(module.register_forward_pre_hook(before_norm))
    was_training = model.training
    try:
        with torch.no_grad(), readers:
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [
        (layer, norm)
        for (layer, norm), ids in seen.items()
        if calls[layer] == len(ids) == calls[norm] and all(readers.reads[i] == 1 for i in ids)
    ]


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with each foldable BatchNorm merged into its layer; and how many were.

    Folding changes the layer's output, so it is wrong where that output is also read elsewhere;
    :func:`find_norm_pairs` leaves such pairs out. As a safety net for readers it cannot see (a module that
    bypasses torch functions), the folded copy is checked against the original on ``example``; where it
    disagrees, the pairs are halved until the ones that change the output are found and left unfolded.
    """
    was_training = model.training
    model.eval()  # the reference for the check; the caller's mode comes back (training evaluates mid-run)
    try:
        pairs = find_norm_pairs(model, example)
        folded = _folded_copy(model, pairs)
        if not pairs or _exact(model, folded, example):
            return folded, len(pairs)
        kept = _pairs_that_keep_outputs(model, pairs, example)
        folded = _folded_copy(model, kept)
        if kept and not _exact(model, folded, example):  # halves that pass alone but not together
            kept, folded = [], _folded_copy(model, [])
        return folded, len(kept)
    finally:
        model.train(was_training)


def _exact(model: nn.Module, folded: nn.Module, example: torch.Tensor) -> bool:
    return agreement(model, folded, example).relative_diff <= FOLD_TOLERANCE


def _pairs_that_keep_outputs(
    model: nn.Module, pairs: list[tuple[str, str]], example: torch.Tensor
) -> list[tuple[str, str]]:
    """The pairs whose folding leaves the outputs alone, found by halving the ones that do not."""
    if not pairs or _exact(model, _folded_copy(model, pairs), example):
        return pairs
    if len(pairs) == 1:
        return []
    half = len(pairs) // 2
    return _pairs_that_keep_outputs(model, pairs[:half], example) + _pairs_that_keep_outputs(
        model, pairs[half:], example
    )


def _folded_copy(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy of ``model`` (in its mode) with each (layer, BatchNorm) pair merged and the BatchNorm gone."""
    folded = copy.deepcopy(model)
    for layer_name, norm_name in pairs:
        layer, norm = folded.get_submodule(layer_name), folded.get_submodule(norm_name)
        fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
        _replace(folded, layer_name, fuse(layer, norm))
        _replace(folded, norm_name, nn.Identity())
    return folded


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attribute, module)


def compiler_available() -> bool:
    """Whether inductor can build CPU kernels here (it needs a C++ compiler)."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


class InferenceModel(nn.Module):
    """A folded, formatted, possibly compiled copy of a model: call it on a batch, get float32 logits.

    ``applied`` names the optimisations in use, for logs and benchmark tables. A compiled model is built for
    one batch size: smaller batches are padded to it (samples are independent in eval mode) and larger ones
    split, so the last, short batch of an evaluation never triggers a recompilation.
    """

    def __init__(
        self,
        model: nn.Module,
        precision: Precision,
        applied: list[str],
        batch: int | None,
        tta: TestTimeAugmentation = NO_TTA,
    ) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.applied = applied + ([tta.describe()] if tta.level else [])
        self.batch = batch  # the compiled batch size; None when not compiled
        self.tta = tta
        self.compile_time_s = 0.0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self.precision.autocast():
            return self.tta(self._logits, x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self.model(x).float()
        return torch.cat([self._padded(part) for part in x.split(self.batch)])

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < self.batch:
            x = torch.cat([x, x.new_zeros((self.batch - n, *x.shape[1:]))])
        return self.model(x)[:n].float()

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise RuntimeError("an InferenceModel is for inference only; train the original model")
        return super().train(False)


def optimize_for_inference(
    model: nn.Module,
    example: torch.Tensor,
    *,
    precision: Precision,
    compile: bool | None = False,
    fold: bool = True,
    expected_flops: float | None = None,
    tta: TestTimeAugmentation = NO_TTA,
) -> InferenceModel:
    """The fast inference copy of ``model`` for batches like ``example`` (see the module docstring).

    ``compile``: True compiles (a ConfigError where it cannot), False never does, None decides from
    ``expected_flops`` (the job's 2 x MACs x images x views) against :data:`AUTO_COMPILE_FLOPS`. ``tta``: the
    views each image is evaluated on (:mod:`resnets.tta`).
    """
    device_example = example.to(precision.device)
    applied: list[str] = []
    if fold:
        fast, count = fold_batchnorm(model, device_example[:2])
        applied.append(f"{count} BatchNorms folded" if count else "no BatchNorm to fold")
    else:
        fast = copy.deepcopy(model).eval()
    if precision.channels_last and example.dim() == 4:
        fast = fast.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if precision.amp:
        applied.append(f"{str(precision.dtype).removeprefix('torch.')} autocast")
    for parameter in fast.parameters():
        parameter.requires_grad_(False)
    if compile is None:
        big = expected_flops is not None and expected_flops >= AUTO_COMPILE_FLOPS
        compile = big and (precision.device.type == "cuda" or compiler_available())
    elif compile and precision.device.type == "cpu" and not compiler_available():
        raise ConfigError("torch.compile needs a C++ compiler on a CPU (install g++), or leave out --compile")
    if not compile:
        return InferenceModel(fast, precision, applied, None, tta)
    compiled = InferenceModel(
        torch.compile(fast, options={"freezing": True}, dynamic=False),
        precision,
        [*applied, "torch.compile (freezing)"],
        batch=int(example.shape[0]),
        tta=tta,
    )
    start = time.perf_counter()
    compiled(device_example)  # compile now, so that the cost is paid (and timed) before the job
    compiled.compile_time_s = time.perf_counter() - start
    return compiled


def with_fast_model(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    precision: Precision,
    compile: bool | None = False,
    images: int | None = None,
    tta: TestTimeAugmentation = NO_TTA,
) -> tuple[InferenceModel, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """The fast copy of ``model`` built on the first of ``batches``, and the batches (that one included).

    ``images`` (the job's size) feeds the auto-compile decision when ``compile`` is None; ``tta`` the views
    of each image (:mod:`resnets.tta`).
    """
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return InferenceModel(copy.deepcopy(model).eval(), precision, [], None, tta), iter(())
    flops = None
    if compile is None and images:
        from resnets.models.profile import count_macs

        flops = 2.0 * count_macs(model, tuple(first[0].shape[1:])) * images * tta.views
    fast = optimize_for_inference(model, first[0], precision=precision, compile=compile, expected_flops=flops, tta=tta)
    return fast, itertools.chain([first], iterator)
