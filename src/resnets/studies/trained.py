"""The trained runs an instrument measures: those given with ``--run``, else short runs it trains itself.

Default runs are trained once into ``OUT/runs/MODEL-DATA-sSEED-STEPS`` with the ``default`` recipe stopped
after ``steps`` optimiser steps, keeping weight snapshots along the way, and reused by every instrument
pointed at the same ``--out``. They are short (a CPU budget), which the JSON says; pass ``--run`` with runs
trained to convergence for the papers' settings. They train in fp32 unless ``--precision fast``, and every
run is measured in the study's precision (:func:`open_measured`), so a study gives the same numbers on every
CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnets.errors import TrainingDivergedError
from resnets.runs import Run, open_run
from resnets.runs.directory import RunDir
from resnets.runs.record import RECORD_FILE
from resnets.studies.common import StudyOptions

DEFAULT_DATA = "fashion-mnist"
DEFAULT_STEPS = 400  # optimiser steps of a default run: about 2 minutes of resnet20 on 2 CPU cores
RESIDUAL, PLAIN, HIGHWAY = "resnet20", "plain20", "highway_cifar19"  # the default trained nets


def trained_runs(
    options: StudyOptions,
    models: Sequence[str],
    *,
    steps: int,
    seed: int = 0,
    snapshots: int = 4,
    checkpoint: str | None = None,
) -> list[Run]:
    """The ``--run`` directories, opened; else one short run per model in ``models``, trained if missing.

    ``snapshots`` weight snapshots are kept at evenly spaced steps (step 0, the initialisation, included).
    """
    if options.runs:
        return [open_measured(options, path, checkpoint) for path in options.runs]
    return [
        open_measured(options, train_short_run(options, model, steps=steps, seed=seed, snapshots=snapshots))
        for model in models
    ]


def open_measured(options: StudyOptions, path: str | Path, checkpoint: str | None = None) -> Run:
    """The run at ``path`` opened to be measured on the study's device in the study's precision (fp32 unless
    ``--precision fast``), whatever precision it was trained in."""
    return open_run(path, checkpoint=checkpoint, device=options.device, amp=options.measuring_precision().amp)


def short_run_path(options: StudyOptions, label: str, *, steps: int, seed: int, data: str | None = None) -> Path:
    """OUT/runs/LABEL-DATA-sSEED-STEPS: where a study keeps the run it trains (and finds it next time)."""
    data = data or options.data or DEFAULT_DATA
    name = Path(data.rstrip("/")).name.replace(".", "_")
    precision = "-bf16" if options.measuring_precision().amp else ""  # fp32 and bf16 runs never stand in for each other
    return Path(options.out) / "runs" / f"{label}-{name}-s{seed}-{steps}{precision}"


def diverged_step(path: str | Path) -> int | None:
    """The step at which a run's loss became non-finite, from its per-step log (None: it did not diverge)."""
    rows = RunDir(path).read_steps()
    return rows[-1]["step"] if rows and not math.isfinite(rows[-1]["loss"]) else None


def train_short_run(
    options: StudyOptions,
    model: str,
    *,
    steps: int,
    seed: int = 0,
    snapshots: int = 4,
    model_options: dict[str, Any] | None = None,
    label: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Train ``model`` for ``steps`` steps on the study's data into OUT/runs (or reuse the finished run there).

    ``model_options`` change the registered model (``label`` then names the run in place of the model);
    ``settings`` are further training overrides (a recipe, a validation split); a study that passes them also
    gives a ``label`` of its own, so that its runs never mix with the default ones. A run that diverged raises
    :class:`TrainingDivergedError` with its step, the first time and every time it is asked for again.
    """
    from resnets.train import TrainConfig, apply_overrides, resume_config, train

    data = (settings or {}).get("data") or options.data or DEFAULT_DATA
    out = short_run_path(options, label or model, steps=steps, seed=seed, data=data)
    if (out / RECORD_FILE).exists() and (out / "summary.json").exists():
        return out
    diverged = diverged_step(out)
    if diverged is not None:
        raise TrainingDivergedError(
            f"{out} diverged at step {diverged} (its steps.csv says so); delete it to train it again", step=diverged
        )
    if (out / "checkpoints" / "last.json").exists():  # interrupted after a checkpoint: continue it
        train(resume_config(out, {"max_steps": steps, "quiet": options.quiet}), resume=True)
        return out
    kept = tuple(sorted({round(i * steps / max(1, snapshots - 1)) for i in range(snapshots)})) if snapshots else ()
    overrides = {
        **(settings or {}),
        "model": model,
        "model_options": dict(model_options or {}),
        "data": data,
        "data_dir": options.data_dir,
        "seed": seed,
        "out": str(out),
        "device": options.device,
        "quiet": options.quiet,
        "max_steps": steps,
        "epochs": None,
        "snapshot_steps": kept,
        "amp": options.measuring_precision().amp,  # fp32 by default: the same run on every CPU
    }
    train(apply_overrides(TrainConfig(), overrides, "the study's default run"))
    return out
