"""Export a trained model to ONNX, TorchScript or safetensors, and check the file gives the same outputs.

ONNX uses the torch.export-based exporter (``dynamo=True``; it needs ``onnx`` and ``onnxscript``) with a
dynamic batch axis, and dynamic height and width for image models that take any size (global pooling
does; a ViT's position table does not); the legacy TorchScript-based exporter is deprecated and used only
if the new one fails, which the result records. The exporters' progress lines, warnings and log records
are swallowed (:func:`quiet`): the command prints its own summary. TorchScript is a trace in eval mode (our
models skip their Python input check while tracing). Safetensors is the weights with the run record in the
file's metadata and in a JSON sidecar, so ``open_run`` rebuilds it, data settings included, without
``--model``.

Every file carries the run record, so that it alone says how to prepare its inputs (``predict`` and
``eval`` read it, :mod:`resnets.runs.exported`): safetensors in its metadata, TorchScript as an extra file
in the archive, ONNX as ``metadata_props`` (the record, and mean, std, classes and input size on their own
for other tools; :func:`resnets.io.model_files.export_metadata`).

Every file is serialised in memory and then written through the write guard (:func:`write_file`,
:mod:`resnets.io.guard`): a temporary file in the destination folder renamed into place, never one of a run's
own files (``--out RUN/config.json`` or ``RUN/checkpoints/last.safetensors``) nor through a link inside a run
(a symlinked ``RUN/exports``); a full disk or a read-only folder is one error line and leaves no partial file.
(TorchScript's own file writer aborts the process from C++ when the disk fills.)

After writing ONNX or TorchScript the exported model is run on a random batch of a size other than the
one traced (for an ONNX image model with dynamic height and width, also on a batch 5/4 the size in each
direction, e.g. 40x40 for a 32x32 CIFAR net), and compared with the PyTorch model: the maximum absolute
difference is returned, and a difference above the tolerance (relative to the logits' scale when they
exceed 1, since an untrained deep pre-activation net can output 1e5 where float32 rounding alone differs
by 0.1) is an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from resnets.errors import ResnetsError, UnknownNameError, first_line
from resnets.inference import agreement, fold_batchnorm
from resnets.io import guard
from resnets.io.atomic import atomic_write, json_text
from resnets.io.model_files import (
    INSTALL_ONNX,
    RECORD_KEY,
    TORCHSCRIPT_RECORD,
    OnnxModel,
    export_metadata,
    load_torchscript,
)
from resnets.io.resources import check_batch
from resnets.models.base import SkipNetwork
from resnets.models.profile import default_input
from resnets.runs.memory import check_run_memory
from resnets.runs.open import Run, open_run
from resnets.runs.record import RunRecord

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # max |exported - PyTorch| on logits, times max(1, max |logits|): float32 reordering gives ~1e-6
MIN_OPSET = 7  # the oldest ONNX opset the exporters write (the dynamo one converts to those below 18)
TRACE_BATCH, CHECK_BATCH = 2, 3  # different sizes, so the check also proves the batch axis is dynamic


@dataclass
class ExportResult:
    """What was written and how closely it reproduces the PyTorch model."""

    path: Path
    format: str
    exporter: str  # e.g. "torch.onnx dynamo, opset 20"
    max_abs_diff: float | None  # None when the check could not run (onnxruntime missing)
    max_abs_output: float | None = None  # the PyTorch logits' largest magnitude, the scale of the difference
    note: str = ""
    sidecar: Path | None = None
    checked: tuple[str, ...] = ()  # the input sizes the check ran at, e.g. ("32x32", "40x40")


def export_model(
    source: str | Path,
    format: str,
    *,
    model: str | None = None,
    out: str | Path | None = None,
    opset: int | None = None,
    checkpoint: str | None = None,
    tolerance: float = TOLERANCE,
    optimize: bool = False,
) -> ExportResult:
    """Open a run directory or weight file and write it as ``format``; see the module docstring.

    ``optimize`` writes the fast inference graph (:mod:`resnets.inference`): BatchNorms folded into their
    convolutions and, for TorchScript, the graph frozen (weights become constants the JIT can fuse). It is checked against the
    unoptimised fp32 model like any export.
    """
    if format not in FORMATS:
        raise UnknownNameError("export format", format, FORMATS)
    if optimize and format == "safetensors":
        raise ResnetsError(
            "--optimize applies to onnx and torchscript: a folded model no longer has the state-dict keys "
            "that safetensors files carry; leave it out, or choose --format torchscript"
        )
    if opset is not None and format != "onnx":
        raise ResnetsError(f"--opset applies to ONNX only, not {format}")
    if opset is not None and opset < MIN_OPSET:
        raise ResnetsError(f"--opset must be at least {MIN_OPSET} (an ONNX opset version), got {opset}")
    run = open_run(source, model=model, checkpoint=checkpoint)
    net = run.model.float().to(memory_format=torch.contiguous_format).eval()
    record = run.record
    path = Path(out) if out else default_output(source, record.model, format, optimize)
    if path.exists() and path.resolve() == Path(source).resolve():
        raise ResnetsError(f"--out {str(path)!r} is the file being exported; choose another path")
    for target in (path, *([_sidecar(path)] if format == "safetensors" else [])):
        guard.check(target)  # a run's own files, links and folders are refused before the export's seconds of work
    check_run_memory(record, CHECK_BATCH, training=False, what="exporting")
    if format == "safetensors":
        return _export_safetensors(net, run, path)
    x = example_input(net, record, TRACE_BATCH)
    checks = [example_input(net, record, CHECK_BATCH)]
    shape = list(record.data.sample_shape) if record.data else list(x.shape[1:])
    metadata = export_metadata(record.to_dict(), shape)
    exported, note = net, ""
    if optimize:
        exported, folded = fold_batchnorm(net, x)
        note = f"optimized: {folded} BatchNorms folded into their layers"
    if format == "onnx":
        other = other_size_input(net, checks[0])
        exporter = export_onnx(exported, x, path, opset, metadata=metadata, any_size=other is not None)
        checks += [other] if other is not None else []
        (diff, scale), check_note = _check_onnx(path, net, checks)
        note = "; ".join(n for n in (note, check_note) if n)
    else:
        exporter = export_torchscript(exported, x, path, optimize=optimize, record=metadata[RECORD_KEY])
        with torch.jit.optimized_execution(False):  # the graph as saved, without seconds of JIT fusion first
            check_result = agreement(net, load_torchscript(path)[0], checks[0])
            diff, scale = check_result.max_abs_diff, check_result.max_abs_logit
    if diff is not None and not diff <= tolerance * max(1.0, scale):
        raise ResnetsError(
            f"the exported {format} model differs from the PyTorch model by {diff:.3g} on logits up "
            f"to {scale:.3g} (tolerance {tolerance:g}); do not use {str(path)!r}"
        )
    sizes = tuple("x".join(str(n) for n in c.shape[2:]) for c in checks) if checks[0].dim() == 4 else ()
    return ExportResult(path, format, exporter, diff, scale, note, checked=sizes if diff is not None else ())


def default_output(source: str | Path, model: str, format: str, optimize: bool = False) -> Path:
    """``RUN_DIR/exports/MODEL.EXT`` for a run, ``STEM.EXT`` in the current folder for a weight file
    (``MODEL-optimized.EXT`` and ``STEM-optimized.EXT`` for the optimised graph)."""
    source = Path(source)
    suffix = ("-optimized" if optimize else "") + FORMATS[format]
    if source.is_dir():
        return source / "exports" / f"{model}{suffix}"
    return Path(f"{source.name.split('.')[0]}{suffix}")


def example_input(net: SkipNetwork, record: RunRecord, batch: int) -> torch.Tensor:
    """A random batch shaped like the model's training input (or its registered default size)."""
    size = list(default_input(net, record.model))
    shape = record.data.sample_shape if record.data else None
    if shape and len(shape) == 3 and net.input_kind == "image":
        size = [int(s) for s in shape]
    elif shape and len(shape) == 3 and net.input_kind == "sequence":
        size = [int(shape[1]), net.in_channels]  # one image row per token
    check_batch(batch, size, "the export's example input", "export a model trained on smaller samples")
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *size), generator=generator)


def other_size_input(net: SkipNetwork, x: torch.Tensor) -> torch.Tensor | None:
    """A random batch like ``x`` at 5/4 its height and width, where the image model takes that size, else None.

    Global pooling makes a network take any size; a fixed position table or a flattening classifier does
    not, and such a model keeps a fixed input size in its export.
    """
    if x.dim() != 4 or net.input_kind != "image":
        return None
    height, width = x.shape[-2:]
    size = (height + max(1, height // 4), width + max(1, width // 4))
    other = torch.randn((*x.shape[:2], *size), generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            net(other)
    except Exception:  # noqa: BLE001 - whatever the model raises at a size it cannot take
        return None
    return other


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow what an exporter prints (the dynamo exporter's progress lines), warns and logs.

    The command prints its own summary; the exporter's screen of deprecation notices and progress lines
    says nothing the user can act on. An export that fails still raises, and says why.
    """
    chatter = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            yield chatter
    finally:
        logging.disable(previous)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` through the write guard (:mod:`resnets.io.guard`): atomically, never over a run's own files
    or through a link; a full disk or a read-only folder is one line and leaves the old file as it was."""
    atomic_write(path, data)


def _sidecar(path: Path) -> Path:
    """The JSON file beside a safetensors export that names its source and record."""
    return path.with_name(path.name.removesuffix(".safetensors") + ".json")


def export_onnx(
    net: SkipNetwork,
    x: torch.Tensor,
    path: Path,
    opset: int | None,
    *,
    metadata: dict[str, str] | None = None,
    any_size: bool = False,
) -> str:
    """Write ONNX with input "input" and output "logits", batch axis dynamic (and height and width with
    ``any_size``), ``metadata`` as its metadata_props; returns the exporter used, with the dynamic axes."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ResnetsError(
            f"ONNX export needs the onnx and onnxscript packages ({error}); install them with: {INSTALL_ONNX}"
        ) from None
    names = {"input_names": ["input"], "output_names": ["logits"]}
    axes = {0: "batch", 2: "height", 3: "width"} if any_size else {0: "batch"}
    dynamic = "dynamic batch, height and width" if any_size else "dynamic batch"
    try:  # exported in memory, so that only write_file touches the disk and its errors are not "export failed"
        with torch.no_grad(), quiet():
            program = torch.onnx.export(
                net,
                (x,),
                None,
                dynamo=True,
                verbose=False,
                dynamic_shapes=({axis: torch.export.Dim(name) for axis, name in axes.items()},),
                opset_version=opset,
                **names,
            )
        proto = program.model_proto  # weights inside: no external data file
        version = program.model.opset_imports.get("", opset)
        exporter = f"torch.onnx dynamo exporter, opset {version}, {dynamic}"
    except Exception as error:  # noqa: BLE001 - any op the new exporter cannot translate: fall back, and say so
        failure = f"{type(error).__name__}: {first_line(error)}"
        buffer = io.BytesIO()
        try:
            with torch.no_grad(), quiet():  # the legacy exporter's deprecation and constant-folding notices
                torch.onnx.export(
                    net,
                    (x,),
                    buffer,
                    dynamo=False,
                    opset_version=opset or 17,
                    dynamic_axes={"input": axes, "logits": {0: "batch"}},
                    **names,
                )
        except Exception as legacy:  # noqa: BLE001 - both exporters failed: say why, in one line
            raise ResnetsError(
                f"neither ONNX exporter could write this model (dynamo: {failure}; legacy: "
                f"{type(legacy).__name__}: {first_line(legacy)}); try another --opset"
            ) from None
        proto = onnx.load_model_from_string(buffer.getvalue())
        exporter = (
            f"legacy TorchScript-based ONNX exporter, opset {opset or 17}, {dynamic}; "
            f"the dynamo exporter failed: {failure}"
        )
    existing = {entry.key: entry.value for entry in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**existing, **(metadata or {})})
    write_file(path, proto.SerializeToString())
    return exporter


def export_torchscript(
    net: torch.nn.Module, x: torch.Tensor, path: Path, optimize: bool = False, record: str | None = None
) -> str:
    """Trace in eval mode and save (frozen: weights as constants, with ``optimize``), with the run ``record``
    (JSON) as the archive's extra file ``resnets_record.json``; returns the exporter."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.x, still widely read
        # check_trace re-runs the model to compare; we compare on a fresh batch size afterwards instead
        traced = torch.jit.trace(net, (x,), check_trace=False)
        if optimize:
            # Frozen only: optimize_for_inference's oneDNN graph does not survive save and load (torch 2.14).
            traced = torch.jit.freeze(traced.eval())
        buffer = io.BytesIO()
        extra = {TORCHSCRIPT_RECORD: record} if record is not None else {}
        torch.jit.save(traced, buffer, _extra_files=extra)  # in memory: the C++ writer aborts on a full disk
    write_file(path, buffer.getvalue())
    return "torch.jit.trace, frozen" if optimize else "torch.jit.trace"


def _export_safetensors(net: SkipNetwork, run: Run, path: Path) -> ExportResult:
    from safetensors.torch import save

    record = run.record.to_dict()
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"model": run.record.model, "format": "resnets-checkpoint-1", "record": json.dumps(record)}
    write_file(path, save(weights, metadata=metadata))
    sidecar = _sidecar(path)
    write_file(sidecar, json_text({"source": str(run.checkpoint), "record": record}).encode())
    reloaded = open_run(path).model.to(memory_format=torch.contiguous_format)
    check = agreement(net, reloaded, example_input(net, run.record, CHECK_BATCH))
    return ExportResult(
        path, "safetensors", "safetensors.torch.save", check.max_abs_diff, check.max_abs_logit, sidecar=sidecar
    )


def _check_onnx(
    path: Path, net: SkipNetwork, checks: list[torch.Tensor]
) -> tuple[tuple[float | None, float | None], str]:
    """The largest difference from PyTorch over the ``checks`` batches, and that scale; None without onnxruntime."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return (None, None), f"not verified: onnxruntime is not installed ({INSTALL_ONNX})"
    runner = OnnxModel(path)
    results = [agreement(net, runner, x) for x in checks]
    return (max(r.max_abs_diff for r in results), max(r.max_abs_logit for r in results)), ""
