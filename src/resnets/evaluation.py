"""``resnets eval``'s work: measure a run (or weight file) on one split and write eval.json and confusion.png.

A run is measured as training measured it (:meth:`resnets.runs.Run.evaluate`): its own data and splits,
its training statistics, its precision and evaluation batch, so the test error printed here equals the one
the run recorded for the same checkpoint. A bare weight file needs ``data`` and is normalised with that
data's own training statistics. The source is opened by :func:`resnets.runs.exported.open_source`, the
function ``predict`` uses, so a safetensors, TorchScript or ONNX export is evaluated on its recorded data
with the inputs ``predict`` would give it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnets.io import guard
from resnets.io.atomic import atomic_write_json
from resnets.io.text import plot_label
from resnets.metrics import EvalResult
from resnets.runs.exported import open_source


def evaluate_source(
    source: str | Path,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    model: str | None = None,
    device: str = "cpu",
    checkpoint: str | None = None,
    compile: bool | None = None,
    tta: int | None = None,
) -> tuple[EvalResult, dict[str, Any]]:
    """Open ``source`` and evaluate it on ``split``; returns the result and what was evaluated.

    ``data`` replaces the recorded data set (the same splits are drawn from it when it is the same data);
    ``tta`` the run's test-time augmentation level (:mod:`resnets.tta`; None keeps the recipe's).
    """
    run = open_source(source, model=model, checkpoint=checkpoint, device=device)
    run.tta = tta
    result = run.evaluate(split, data=data, data_dir=data_dir, compile=compile)
    record = run.record
    bundle = run.data(data, data_dir)
    from_record = record.data is not None
    described = {
        "model": record.model,
        "model_options": record.model_options,
        "num_classes": record.num_classes,
        "in_channels": record.in_channels,
        "checkpoint": str(run.checkpoint),
        "source": str(source),
        "data": bundle.name,
        "split": split,
        "mean": list(record.data.mean if from_record else bundle.mean),
        "std": list(record.data.std if from_record else bundle.std),
        "statistics": "run" if from_record else "data",
        "precision": "bf16 autocast" if run.precision.amp else "fp32",
        "inference": run.inference,  # the fast path's steps (folded BatchNorms, layout, compile), or the runtime
        "exported": run.exported,  # "onnx" or "torchscript" for an exported graph, else None
        "tta": run.test_time.level,
        "views": run.test_time.views,  # forward passes per image
    }
    return result, described


#: The files ``write_eval_report`` writes into its folder.
REPORT_FILES = ("eval.json", "confusion.png")


def report_dir(source: str | Path, split: str, out: str | Path | None = None) -> Path:
    """Where eval's report goes: ``out``, else RUN/eval-SPLIT for a run, else eval-NAME-SPLIT here.

    The default folder inside a run must be a real folder: the write guard refuses a symlink there (planted, or
    left by a copy), which would send the report outside the run.
    """
    if out is not None:
        return Path(out)
    source = Path(source)
    return source / f"eval-{split}" if source.is_dir() else Path(f"eval-{source.stem}-{split}")


def check_report_targets(out_dir: str | Path) -> None:
    """Refuse, before any work is done, report files that the write guard would refuse (:mod:`resnets.io.guard`):
    a run's own files, links and folders in the way, an out folder that is a file."""
    for name in REPORT_FILES:
        guard.check(Path(out_dir) / name)


def write_eval_report(result: EvalResult, described: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write eval.json (metrics and what was evaluated; no NaN, which JSON lacks: a diverged model's loss is null)
    and confusion.png into ``out_dir``, each atomically through the write guard; a full disk is one line."""
    from resnets.reports.confusion import plot_confusion

    out = Path(out_dir)
    json_path, png_path = (out / name for name in REPORT_FILES)
    title = plot_label(
        f"{described.get('model', 'model')} on {described.get('data', 'data')} ({described.get('split', '')})"
    )
    labels = [plot_label(name) for name in result.classes]  # names from files: no escapes, no mathtext
    atomic_write_json(json_path, {**result.to_dict(), **described})
    plot_confusion(result.confusion, labels, png_path, title=title)  # atomically, through the guard too
    return {"json": json_path, "png": png_path}
