"""The one reader of weight files, and the one strict way to put their tensors into a model.

Every entry point (train ``--weights``, eval, predict, export, the Python API) reads files through
:func:`read_weight_file` and loads them with :func:`load_weights`, so a file that loads in one loads in all.

Safetensors files load directly. ``.pth``/``.pt`` files load only through ``torch.load(weights_only=True)``:
a pickle can run arbitrary code when it is read, so a file that the restricted unpickler refuses is an
error, never retried with full pickle. torchvision ResNet state dicts (and timm's ``resnet50d`` and
``seresnet50``) load unchanged, because our models use their module names.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import CheckpointError
from resnets.models.base import SkipNetwork
from resnets.models.features import FeatureListNet
from resnets.models.registry import create_model, get_model_entry

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt")
SUPPORTED_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
# where training scripts nest the weights, in the order tried (Lightning, plain scripts, DeiT/MAE, timm's EMA copy)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema")
_MAX_NESTING = 4  # wrapper levels followed before giving up, e.g. {"model": {"state_dict": ...}}
# added to every key by DistributedDataParallel / DataParallel, and by torch.compile's OptimizedModule
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys listed in an error before "..."


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth`` or ``.pt`` file, on the CPU, as the bare model saved them.

    Unwraps the dicts that training scripts nest the weights in (see ``WRAPPER_KEYS``) and strips the
    ``module.`` and ``_orig_mod.`` prefixes that DDP and torch.compile add, in any order, so that the keys
    are the model's own module names.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"weight file {str(path)!r} does not exist"
            if not path.exists()
            else f"weight path {str(path)!r} is not a file"
        )
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = _load_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        state = _extract_state_dict(_load_torch(path), path)
    else:
        raise CheckpointError(
            f"cannot read weight file {str(path)!r}: unknown extension {path.suffix or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return _current_keys(_strip_prefixes(state))


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors header (empty when there is none or the file is not safetensors)."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:  # a corrupt header is a SafetensorError
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:  # a bad header, or data it does not hold
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from None


def _load_torch(path: Path) -> Any:
    """What a ``.pth``/``.pt`` file holds, read by the restricted unpickler only.

    torch's own messages advise retrying with ``weights_only=False``; that would run code from the file,
    so they are never passed on: the messages here say what the file holds and how to convert it safely.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        refused = re.search(r"GLOBAL (\S+)", message)
        if refused is None:
            detail = re.search(r"WeightsUnpickler error:\s*([^.\n]+)", message)
            raise CheckpointError(
                f"{str(path)!r} is not a readable tensors-only PyTorch file"
                + (f" ({detail.group(1).strip()})" if detail else "")
                + "; expected a state dict saved with torch.save, or a .safetensors file"
            ) from None
        raise CheckpointError(
            f"refused to load {str(path)!r}: it is not a plain weights file, it holds Python objects other than "
            f"tensors (it refers to {refused.group(1)}); only tensors-only checkpoints are accepted, because "
            "unpickling anything else can run code. Convert it where you trust its source: load it there and save "
            "the weights alone, e.g. safetensors.torch.save_file(model.state_dict(), 'w.safetensors')"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first_line = str(error).split("\n")[0].split(". ")[0]  # torch appends advice after the first sentence
        raise CheckpointError(f"{str(path)!r} is not a readable PyTorch weight file: {first_line}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict, or one nested (one or more levels) under the keys of ``WRAPPER_KEYS``."""
    for _ in range(_MAX_NESTING):
        if not isinstance(obj, dict) or _is_state_dict(obj):
            break
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{str(path)!r} holds {'an empty dict' if isinstance(obj, dict) else 'a ' + type(obj).__name__}, "
            f"not a state dict; expected a mapping of parameter names to tensors, bare or under one of the keys "
            f"{', '.join(WRAPPER_KEYS)}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{str(path)!r} is not a state dict: {len(bad)} entries are not tensors ({_first(bad)}); "
            f"expected parameter names mapped to tensors"
        )
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes that every key shares, repeatedly (``module._orig_mod.``, ``_orig_mod.module.``)."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            break
        state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


#: torchvision's DenseNet files keep the key names of old torchvision (``denselayer1.norm.1.weight``), which
#: torchvision renames when it loads them (``denselayer1.norm1.weight``); so does this reader.
_OLD_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


def _current_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of old torchvision DenseNet files under their current names; every other key as it is."""
    if not any(_OLD_DENSE_KEY.match(key) for key in state):
        return state
    return {_OLD_DENSE_KEY.sub(r"\1\2", key): value for key, value in state.items()}


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


@dataclass
class LoadReport:
    """What did not match when loading a state dict into a model (all empty after a load that succeeded)."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    fresh: list[str] = field(default_factory=list)  # the model's classifier, kept as initialised (reset_head)
    loaded: list[str] = field(default_factory=list)  # the keys copied from the file, in the file's order

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


@dataclass(frozen=True)
class LoadedFile:
    """A model's starting weights: the file, how it was found, and what of it was loaded (for the run's banner)."""

    path: Path
    origin: str  # "--weights", "torchvision's cache", "timm's cache"
    report: LoadReport


def load_weights(
    model: SkipNetwork | FeatureListNet, state: dict[str, torch.Tensor], *, reset_head: bool = False
) -> LoadReport:
    """Copy ``state`` into ``model``; every tensor must fit exactly, or one CheckpointError says what did not.

    With ``reset_head`` the file's classifier (the keys under ``model.classifier_name``) is dropped and the
    model keeps its freshly initialised one: fine-tuning a trunk on a task with other classes. A features-only
    model (``create_model(..., features_only=True)``) has no classifier: it takes the trunk, as timm's do.
    """
    if isinstance(model, FeatureListNet):
        return load_weights(model.model, state, reset_head=True)
    head = model.classifier_name + "."
    expected = model.state_dict()
    fresh: list[str] = []
    if reset_head:
        fresh = [k for k in expected if k.startswith(head)]
        expected = {k: v for k, v in expected.items() if not k.startswith(head)}
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    _check_stem(model, state)
    # BatchNorm's step counter is absent from files saved before torch 0.4.1 (torchvision's DenseNets); it only
    # matters with momentum=None, and BatchNorm fills it in when a file has none
    counted = any(k.endswith(_STEP_COUNTER) for k in state)
    report = LoadReport(
        missing=[k for k in expected if k not in state and (counted or not k.endswith(_STEP_COUNTER))],
        unexpected=[k for k in state if k not in expected],
        mismatched=[
            (k, tuple(v.shape), tuple(expected[k].shape))
            for k, v in state.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)
        ],
        fresh=fresh,
        loaded=list(state),
    )
    if not report.ok:
        raise CheckpointError(_describe(model, report))
    model.load_state_dict(state, strict=not reset_head)  # with reset_head the check above stands in for strict
    return report


_STEP_COUNTER = ".num_batches_tracked"


def _stem_key(model: nn.Module, in_channels: int) -> str | None:
    """The weight of the first conv or linear layer that reads the input, whose dim 1 is the input channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return f"{name}.weight"
        if isinstance(module, nn.Linear) and module.in_features == in_channels:
            return f"{name}.weight"
    return None


def _check_stem(model: SkipNetwork, state: dict[str, torch.Tensor]) -> None:
    """Name a channel-count mismatch as such, rather than as one more tensor of the wrong shape."""
    own = model.state_dict()
    key = _stem_key(model, model.in_channels)
    if key is None or key not in state or key not in own or state[key].dim() != own[key].dim():
        return
    file_channels, model_channels = state[key].shape[1], own[key].shape[1]
    if file_channels != model_channels:
        raise CheckpointError(
            f"the weights were built for {file_channels} input channels but the data gives the model "
            f"{model_channels} (in_channels={model_channels}); use weights trained on {model_channels}-channel data, "
            f"or {file_channels}-channel data with these weights"
        )


def _describe(model: SkipNetwork, report: LoadReport) -> str:
    """One message for everything that did not fit, with the fix when only the classifier differs."""
    parts = []
    if report.mismatched:
        shown = "; ".join(f"{k}: file {list(f)} vs model {list(m)}" for k, f, m in report.mismatched[:_SHOWN])
        parts.append(f"{len(report.mismatched)} tensors differ in shape ({shown})")
    if report.missing:
        parts.append(f"{len(report.missing)} keys missing from the file ({_first(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected keys in the file ({_first(report.unexpected)})")
    message = "weights do not fit the model: " + "; ".join(parts)
    hint = _classifier_hint(model, report)
    if hint:
        message += f". {hint}"
    elif report.missing or report.unexpected:
        message += ". Check that --model names the architecture these weights were trained as"
    return message


def _classifier_hint(model: SkipNetwork, report: LoadReport) -> str:
    """When only the classifier differs, how to keep the trunk with a fresh head, or match the file's classes."""
    head = model.classifier_name + "."
    keys = report.missing + report.unexpected + [k for k, _, _ in report.mismatched]
    if not keys or not all(k.startswith(head) for k in keys):
        return ""
    classes = model.num_classes
    fresh = "pass --reset-head (reset_head=True) to " + (
        f"train a fresh {classes}-class classifier on these weights" if classes else "drop the file's classifier"
    )
    file_classes = {f[0] if f else None for _, f, _ in report.mismatched}
    same_inputs = all(f[1:] == m[1:] for _, f, m in report.mismatched)
    if report.missing or report.unexpected or len(file_classes) != 1 or None in file_classes or not same_inputs:
        return f"Only the classifier ({model.classifier_name}) differs: {fresh}"
    (n,) = file_classes
    return (
        f"The file's classifier has {n} classes, the model {classes}: {fresh}, or keep the file's classifier "
        f"with a {n}-class model (num_classes={n})"
    )


def infer_sizes(name: str, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The ``num_classes`` and ``in_channels`` that a state dict was saved with, where its shapes tell.

    Found by building the model twice on the meta device (free) and seeing which tensors change shape
    when the class or channel count changes, so it needs no knowledge of any family's module names.
    """
    entry = get_model_entry(name)
    classes0 = entry.num_classes
    channels0 = entry.input_size[0] if entry.input_kind == "image" else entry.input_size[-1]
    with torch.device("meta"):
        base = create_model(name).state_dict()
        more_classes = create_model(name, num_classes=classes0 + 1).state_dict()
        more_channels = create_model(name, in_channels=channels0 + 1).state_dict()
    sizes: dict[str, int] = {}
    for key, tensor in base.items():
        if key not in state or not state[key].dim():
            continue
        if "num_classes" not in sizes and more_classes[key].shape[0] == classes0 + 1 and tensor.shape[0] == classes0:
            sizes["num_classes"] = int(state[key].shape[0])
        if (
            "in_channels" not in sizes
            and tensor.dim() >= 2
            and state[key].dim() >= 2
            and more_channels[key].shape[1] == channels0 + 1
            and tensor.shape[1] == channels0
        ):
            sizes["in_channels"] = int(state[key].shape[1])
    return sizes
