"""``resnets eval``'s work: measure a run (or weight file) on one split and write eval.json and confusion.png.

A run is measured as training measured it (:meth:`resnets.runs.Run.evaluate`): its own data and splits,
its training statistics, its precision and evaluation batch, so the test error printed here equals the one
the run recorded for the same checkpoint. A bare weight file needs ``data`` and is normalised with that
data's own training statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resnets.metrics import EvalResult
from resnets.runs.open import open_run


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
) -> tuple[EvalResult, dict[str, Any]]:
    """Open ``source`` and evaluate it on ``split``; returns the result and what was evaluated.

    ``data`` replaces the recorded data set (the same splits are drawn from it when it is the same data).
    """
    run = open_run(source, model=model, checkpoint=checkpoint, device=device)
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
        "inference": run.inference,  # the fast path's steps (folded BatchNorms, layout, compile)
    }
    return result, described


def write_eval_report(result: EvalResult, described: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write eval.json (metrics and what was evaluated) and confusion.png into ``out_dir``."""
    from resnets.reports.confusion import plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "eval.json"
    json_path.write_text(json.dumps({**result.to_dict(), **described}, indent=2) + "\n")
    title = f"{described.get('model', 'model')} on {described.get('data', 'data')} ({described.get('split', '')})"
    png_path = plot_confusion(result.confusion, result.classes, out / "confusion.png", title=title)
    return {"json": json_path, "png": png_path}
