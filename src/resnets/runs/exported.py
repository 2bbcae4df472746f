"""The one way ``eval`` and ``predict`` open what they are given, exported graphs included.

:func:`open_source` resolves a run directory, a checkpoint, a safetensors export or weight file
(:func:`~resnets.runs.open.open_run`), a TorchScript archive or an ONNX file to a :class:`Run`: a model
callable and the run record that says how its inputs are prepared (channels, size, mean and std, class
names, layout). Both commands then feed the model through the run's loader and ``Run.inference_model``, so
the same image reaches every kind of file as the same tensor.

An exported graph carries its record in the file (see :mod:`resnets.io.model_files`), so it needs no run
directory. It was written in float32 and contiguous layout, so it runs that way whatever precision the run
trained with. Loading a TorchScript file runs code from whoever made it: see :mod:`resnets.io.model_files`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from resnets.errors import CheckpointError, ConfigError
from resnets.io.model_files import RECORD_KEY, OnnxModel, exported_format, load_torchscript
from resnets.runs.open import Run, open_run
from resnets.runs.record import record_from_text


def open_source(
    source: str | Path,
    *,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    model: str | None = None,
) -> Run:
    """Open ``source`` for inference: an exported graph here, anything else through ``open_run``.

    ``checkpoint`` applies to run directories only; ``model``, where given, must agree with an exported
    file's record.
    """
    from resnets.device import resolve_device

    path = Path(source)
    kind = exported_format(path)
    if kind is None:
        return open_run(source, checkpoint=checkpoint, device=device, model=model)
    if checkpoint is not None:
        raise ConfigError(f"--checkpoint applies to run directories; {str(path)!r} is one exported {kind} model")
    device = resolve_device(str(device))
    if kind == "onnx":
        net = OnnxModel(path, device)
        text, where = net.metadata.get(RECORD_KEY), f"the metadata_props of {str(path)!r}"
    else:
        net, text = load_torchscript(path, device)
        where = f"the record file inside {str(path)!r}"
    if not text:
        raise CheckpointError(
            f"{str(path)!r} carries no resnets run record, so how to prepare its inputs is unknown; it was not "
            "written by `resnets export` (or by an older version): export the run again"
        )
    record = record_from_text(text, where)
    if model is not None and model != record.model:
        raise ConfigError(f"--model {model!r} contradicts {str(path)!r}, an export of {record.model!r}; drop it")
    record = replace(record, amp=False, channels_last=False)  # the graph was exported in fp32, contiguous
    return Run(record=record, model=net, checkpoint=path, path=None, device=device, exported=kind)
