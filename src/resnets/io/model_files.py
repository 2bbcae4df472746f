"""Exported model files (TorchScript, ONNX): telling them apart, the metadata that describes them, running them.

``resnets export`` writes the run record (model, classes, data statistics, sample shape, layout) into every
file it makes, so that a bare exported file says how its inputs must be prepared: a TorchScript archive
holds it as the extra file ``extra/resnets_record.json``, an ONNX model as ``metadata_props`` (the whole record
under ``resnets_record``, and the fields other tools look for, such as ``mean``, ``std`` and ``classes``,
on their own). Safetensors files carry it in their metadata (:mod:`resnets.io.weight_files`).

Trust. A TorchScript archive is code from whoever made it: its graph runs when the model is called, and
TorchScript operators can read and write files, so loading one is trusting its author as running their
script would be. It is read with ``torch.jit.load``, whose unpickler rebuilds TorchScript values only and runs
no Python pickle code. Only ``.torchscript.pt`` files and ``.pt`` files that are TorchScript archives (a zip
with a ``code/`` folder) are taken for TorchScript; ``.pth`` and other ``.pt`` files are weights, read by the
tensors-only reader. An ONNX file is a graph of standard operators, run by onnxruntime (the optional extra
``onnx``).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import CheckpointError, ConfigError, first_line
from resnets.io.regular import not_regular
from resnets.io.schema import decode_text

RECORD_KEY = "resnets_record"  # ONNX metadata_props key of the run record (JSON)
TORCHSCRIPT_RECORD = "resnets_record.json"  # the TorchScript extra file holding the run record
TORCHSCRIPT_SUFFIX = ".torchscript.pt"
ONNX_SUFFIX = ".onnx"
INSTALL_ONNX = "pip install -e '.[onnx]' in the resnets checkout (onnx, onnxruntime, onnxscript)"


def exported_format(path: str | Path) -> str | None:
    """``"onnx"`` or ``"torchscript"`` for an exported model file, None for anything else (weights, folders).

    A ``.pt`` file is TorchScript only when its zip holds a ``code/`` folder: ``torch.save`` writes ``.pt``
    weight files too, and those go to the tensors-only reader. Only the zip's directory is read.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(ONNX_SUFFIX):
        return "onnx"
    if name.endswith(TORCHSCRIPT_SUFFIX):
        return "torchscript"
    if name.endswith(".pt") and not_regular(path) is None and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
            return "torchscript"
    return None


def check_model_file(path: Path, kind: str) -> None:
    """Refuse a missing path or anything but a regular file (a named pipe would block the reader)."""
    why = not_regular(path)
    if why == "does not exist":
        raise CheckpointError(f"{kind} file {str(path)!r} does not exist")
    if why is not None:
        raise CheckpointError(f"{kind} path {str(path)!r} {why}; give a regular file")


def export_metadata(record: dict[str, Any], sample_shape: list[int]) -> dict[str, str]:
    """The key-value metadata an ONNX export carries: everything needed to prepare its inputs.

    ``sample_shape`` is one training sample without the batch axis, e.g. (C, H, W) for images.
    """
    data = record.get("data") or {}
    classes = data.get("classes") or [str(i) for i in range(record["num_classes"])]
    metadata = {
        RECORD_KEY: json.dumps(record),
        "model": record["model"],
        "classes": json.dumps(classes),
        "num_classes": str(record["num_classes"]),
        "input_shape": json.dumps([int(s) for s in sample_shape]),
    }
    if len(sample_shape) == 3:
        metadata.update(
            input_channels=str(sample_shape[0]), input_height=str(sample_shape[1]), input_width=str(sample_shape[2])
        )
    if data:
        metadata.update(mean=json.dumps(data["mean"]), std=json.dumps(data["std"]), layout=data["layout"])
        if len(sample_shape) == 3:
            metadata["preprocessing"] = (
                "resize to input_height x input_width, scale pixels to [0, 1], subtract mean and divide by std per "
                f"channel; layout {data['layout']}"
            )
    return metadata


def load_torchscript(path: Path, device: torch.device | str = "cpu") -> tuple[torch.jit.ScriptModule, str | None]:
    """The archive's module on ``device``, and the run record JSON it carries (None when it carries none).

    See the module docstring: this runs code from whoever made the file.
    """
    check_model_file(path, "TorchScript")
    extra = {TORCHSCRIPT_RECORD: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.x, still loads
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"{str(path)!r} is not a readable TorchScript archive: {first_line(error)}") from None
    raw = extra[TORCHSCRIPT_RECORD]
    text = decode_text(raw, f"the record file inside {str(path)!r}") if isinstance(raw, bytes) else str(raw)
    return module.eval(), (text or None)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or one line saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"running an ONNX model needs onnxruntime, which is not installed: {INSTALL_ONNX}") from None
    return onnxruntime


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime behind the call of a PyTorch model: float32 (B, ...) in, logits out.

    Inputs are copied to the CPU unless onnxruntime has a CUDA provider and ``device`` is a GPU; the logits
    come back on the input's device.
    """

    def __init__(self, path: Path, device: torch.device | str = "cpu") -> None:
        super().__init__()
        ort = import_onnxruntime()
        check_model_file(path, "ONNX")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no "removing initializer" notices on stderr
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own classes for every kind of bad file
            raise CheckpointError(f"{str(path)!r} is not a readable ONNX model: {first_line(error)}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, classes)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(logits).to(x.device)
