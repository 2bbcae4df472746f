"""Weight files users bring, and models rebuilt from them or from a run directory.

Safetensors files load directly. ``.pth``/``.pt`` files load only through
``torch.load(weights_only=True)``: a pickle can run arbitrary code when it is read, so a file that the
restricted unpickler refuses is an error, never retried with full pickle. torchvision ResNet state dicts
load unchanged, because our ImageNet ResNets use torchvision's module names.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import CheckpointError, ConfigError
from resnets.models.base import SkipNetwork
from resnets.models.registry import create_model, get_model_entry

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt")
SUPPORTED_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
_WRAPPER_KEYS = ("state_dict", "model")  # where common training scripts nest the weights
_DDP_PREFIX = "module."  # added by DistributedDataParallel / DataParallel
_SHOWN = 5  # keys listed in an error before "..."


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth`` or ``.pt`` file, on the CPU, without any ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {str(path)!r} does not exist" if not path.exists()
                              else f"weight path {str(path)!r} is not a file")  # fmt: skip
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = _load_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        state = _load_torch(path)
    else:
        raise CheckpointError(
            f"cannot read weight file {str(path)!r}: unknown extension {path.suffix or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return _strip_prefix(state)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors header (empty when there is none or the file is not safetensors)."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError, OSError, or a bad header
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from None


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refused what the file asks to unpickle: loading it fully could run code from the file.
        message = str(error)
        refused = re.search(r"GLOBAL (\S+)", message)
        detail = re.search(r"WeightsUnpickler error: ([^.\n]*)", message)
        if refused is None:
            raise CheckpointError(
                f"{str(path)!r} is not a readable tensors-only PyTorch file"
                + (f" ({detail.group(1)})" if detail else "")
                + "; expected a state dict saved with torch.save, or a .safetensors file"
            ) from None
        raise CheckpointError(
            f"refused to load {str(path)!r}: it holds Python objects other than tensors (it refers to "
            f"{refused.group(1)}); only tensors-only checkpoints are accepted, because unpickling anything else "
            "can run code. Convert it where you trust it: safetensors.torch.save_file(state_dict, 'w.safetensors')"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r} is not a readable PyTorch weight file: {error}") from None
    return _extract_state_dict(obj, path)


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict, or one nested under "state_dict" or "model" (as many training scripts save)."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict; expected a mapping of parameter "
            f"names to tensors, bare or under one of the keys {', '.join(_WRAPPER_KEYS)}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{str(path)!r} is not a state dict: {len(bad)} entries are not tensors ({_first(bad)}); "
            f"expected parameter names mapped to tensors"
        )
    return obj


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(key.startswith(_DDP_PREFIX) for key in state):
        return {key[len(_DDP_PREFIX):]: value for key, value in state.items()}
    return state


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


@dataclass
class LoadReport:
    """What did not match when loading a state dict into a model (all empty after a strict load)."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def load_weights_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Copy ``state_dict`` into ``model``.

    Strict: any missing or unexpected key or shape mismatch raises one CheckpointError summarising all of
    them. Not strict: the tensors that fit are loaded and the rest are reported (e.g. to fine-tune with a
    new classifier).
    """
    expected = model.state_dict()
    report = LoadReport(
        missing=[k for k in expected if k not in state_dict],
        unexpected=[k for k in state_dict if k not in expected],
        mismatched=[
            (k, tuple(v.shape), tuple(expected[k].shape))
            for k, v in state_dict.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)
        ],
    )
    if strict and not report.ok:
        raise CheckpointError(_describe(model, report))
    bad = {k for k, _, _ in report.mismatched}
    fitting = {k: v for k, v in state_dict.items() if k in expected and k not in bad}
    model.load_state_dict(fitting, strict=False)
    return report


def _describe(model: nn.Module, report: LoadReport) -> str:
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


def _classifier_hint(model: nn.Module, report: LoadReport) -> str:
    """When only the classifier's output size differs, say how many classes the file has."""
    if report.missing or report.unexpected or not report.mismatched:
        return ""
    num_classes = getattr(model, "num_classes", None)
    if not all(model_shape and model_shape[0] == num_classes for _, _, model_shape in report.mismatched):
        return ""
    file_classes = {file_shape[0] for _, file_shape, _ in report.mismatched if file_shape}
    if len(file_classes) != 1:
        return ""
    (n,) = file_classes
    in_channels = [f for _, f, m in report.mismatched if len(f) > 1 and f[1:] != m[1:]]
    if in_channels:
        return ""
    return f"the file has {n} classes, the model {num_classes}: pass --num-classes {n} (or num_classes={n})"


# ---------------------------------------------------------------------------------------------- models


def infer_sizes(name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
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
        if key not in state_dict or not state_dict[key].dim():
            continue
        if "num_classes" not in sizes and more_classes[key].shape[0] == classes0 + 1 and tensor.shape[0] == classes0:
            sizes["num_classes"] = int(state_dict[key].shape[0])
        if ("in_channels" not in sizes and tensor.dim() >= 2 and state_dict[key].dim() >= 2
                and more_channels[key].shape[1] == channels0 + 1 and tensor.shape[1] == channels0):  # fmt: skip
            sizes["in_channels"] = int(state_dict[key].shape[1])
    return sizes


def load_model(
    source: str | Path,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    which: str = "best",
) -> tuple[SkipNetwork, dict[str, Any]]:
    """A model in eval mode with its weights, from a run directory or a weight file, and what is known of it.

    A run directory is rebuilt from its ``config.json`` and ``checkpoints/{which}.safetensors`` (falling back
    to ``last``). A weight file needs ``model`` unless it is a safetensors file whose metadata names one
    (our checkpoints and exports do); class and channel counts come from its shapes unless given.
    The info dict holds model, model_options, num_classes, in_channels, input_kind, checkpoint, and
    from a run also classes, mean, std, sample_shape, data and config (``None`` when unknown).
    """
    path = Path(source)
    if path.is_dir():
        return _load_run(path, model=model, num_classes=num_classes, in_channels=in_channels, which=which)
    if not path.exists():
        raise CheckpointError(
            f"{str(path)!r} does not exist; expected a run directory (with config.json) or a weight file "
            f"({', '.join(SUPPORTED_SUFFIXES)})"
        )
    run_dir = path.parent.parent
    if path.suffix == ".safetensors" and path.parent.name == "checkpoints" and (run_dir / "config.json").is_file():
        # a checkpoint inside a run directory: its config says how the model was built
        return _load_run(run_dir, model=model, num_classes=num_classes, in_channels=in_channels,
                         which=path.name.removesuffix(path.suffix))
    state = load_state_dict_file(path)
    meta = read_safetensors_metadata(path)
    extra = _json_field(meta, "config", path)
    name = model or meta.get("model")
    if not name:
        raise CheckpointError(
            f"{str(path)!r} is a bare weight file that does not say which model it is; pass --model NAME "
            "(`resnets models` lists them)"
        )
    options = dict(extra.get("model_options") or {}) if name == extra.get("model", name) else {}
    sizes = infer_sizes(name, state)
    num_classes = num_classes or sizes.get("num_classes") or extra.get("num_classes")
    in_channels = in_channels or sizes.get("in_channels") or extra.get("in_channels")
    net = _build(name, options, num_classes, in_channels)
    load_weights_into(net, state)
    info = _info(net, name, options, path)
    data = extra.get("data") or {}
    info.update(classes=data.get("classes"), mean=data.get("mean"), std=data.get("std"),
                sample_shape=data.get("sample_shape"), data=data or None, config=extra or None)  # fmt: skip
    return net.eval(), info


def _load_run(path: Path, *, model: str | None, num_classes: int | None, in_channels: int | None,
              which: str) -> tuple[SkipNetwork, dict[str, Any]]:  # fmt: skip
    config = read_run_config(path)
    name = config.get("model")
    if not isinstance(name, str):
        raise ConfigError(f"{str(path / 'config.json')!r} has no \"model\" name; expected a run directory "
                          "written by `resnets train`")  # fmt: skip
    if model and model != name:
        raise ConfigError(f"--model {model!r} contradicts the run directory, which trained {name!r}; drop --model")
    checkpoint = find_checkpoint(path, which)
    for given, key in ((num_classes, "num_classes"), (in_channels, "in_channels")):
        if given is not None and config.get(key) not in (None, given):
            raise ConfigError(f"--{key.replace('_', '-')} {given} contradicts the run, which has "
                              f"{key}={config[key]}; drop the option")  # fmt: skip
    options = dict(config.get("model_options") or {})
    net = _build(name, options, config.get("num_classes"), config.get("in_channels"))
    load_weights_into(net, load_state_dict_file(checkpoint))
    data = config.get("data") or {}
    info = _info(net, name, options, checkpoint)
    info.update(classes=data.get("classes"), mean=data.get("mean"), std=data.get("std"),
                sample_shape=data.get("sample_shape"), data=data, config=config, run_dir=str(path))  # fmt: skip
    return net.eval(), info


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, with an error that says what is missing."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory: it has no config.json; expected a "
                          "directory written by `resnets train`, or a weight file")  # fmt: skip
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{str(config_path)!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{str(config_path)!r} holds a {type(config).__name__}; expected a JSON object")
    return config


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """``checkpoints/{which}.safetensors``, or ``last`` when the asked one was never written."""
    folder = Path(run_dir) / "checkpoints"
    for name in dict.fromkeys((which, "last")):
        candidate = folder / f"{name}.safetensors"
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoints/{which}.safetensors nor "
                          "last.safetensors; has training saved a checkpoint yet?")  # fmt: skip


def _build(name: str, options: dict[str, Any], num_classes: int | None, in_channels: int | None) -> SkipNetwork:
    return create_model(name, num_classes=num_classes, in_channels=in_channels, **options)


def _info(net: SkipNetwork, name: str, options: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    return dict(model=name, model_options=options, num_classes=net.num_classes, in_channels=net.in_channels,
                input_kind=net.input_kind, checkpoint=str(checkpoint))  # fmt: skip


def _json_field(meta: dict[str, str], key: str, path: Path) -> dict[str, Any]:
    if key not in meta:
        return {}
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError:
        raise CheckpointError(f"the {key!r} metadata of {str(path)!r} is not valid JSON") from None
    return value if isinstance(value, dict) else {}
