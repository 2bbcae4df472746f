"""The trained runs an instrument measures: the one reader of a run directory, and the default runs.

:class:`TrainedRun` is how every instrument reads a run: the model opened on the study's device in the study's
precision (fp32 unless ``--precision fast``, whatever the run trained in), its kept weight snapshots, its
per-step log and what ``summary.json`` says of its training (steps, epochs, test error). No instrument reads a
run's files itself.

Runs given with ``--run`` are measured as they are. Otherwise an instrument trains its default runs, listed in
one table, :data:`DEFAULT_RUNS` (model, data, recipe, length, depths, seeds, snapshots per instrument and
budget), once into ``OUT/runs/MODEL-DATA-sSEED-STEPS``, keeping weight snapshots along the way, and every
instrument pointed at the same ``--out`` reuses them. The ``cpu`` rows are short runs (minutes on two
cores, far from convergence: the JSON says how long they trained); ``--budget paper`` uses the paper's
schedule where a row exists and the ``cpu`` row elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from resnets.errors import TrainingDivergedError
from resnets.runs import Run, RunDir, open_run
from resnets.runs.checkpoint import has_checkpoint
from resnets.runs.record import RECORD_FILE
from resnets.studies.contract import Context, TrainedOptions

DEFAULT_DATA = "fashion-mnist"
CPU_STEPS = 400  # optimiser steps of a cpu-budget run: about 2 minutes of resnet20 on 2 CPU cores
RESIDUAL, PLAIN, HIGHWAY = "resnet20", "plain20", "highway_cifar19"


@dataclass(frozen=True)
class DefaultRuns:
    """What an instrument trains when given no ``--run``: one row of :data:`DEFAULT_RUNS`."""

    models: tuple[str, ...]
    steps: int  # optimiser steps per run
    snapshots: int = 4  # weight snapshots kept, evenly spaced, step 0 included (0: none)
    recipe: str = "default"
    data: str | None = None  # None: the study's --data, else fashion-mnist
    depths: tuple[int, ...] = ()  # the depth sweep of instruments that train each model at several depths
    seeds: int = 1  # training seeds of instruments that repeat training
    changes: dict[str, Any] = field(default_factory=dict)  # training settings changed from the recipe's


#: instrument -> budget -> its default runs; the one place to change what the instruments train.
DEFAULT_RUNS: dict[str, dict[str, DefaultRuns]] = {
    "gradients": {"cpu": DefaultRuns((RESIDUAL, PLAIN, HIGHWAY), CPU_STEPS)},
    "responses": {"cpu": DefaultRuns((RESIDUAL, PLAIN), CPU_STEPS)},
    "lesion": {"cpu": DefaultRuns((RESIDUAL, PLAIN), CPU_STEPS)},
    "paths": {"cpu": DefaultRuns((RESIDUAL,), CPU_STEPS)},
    "iterative": {"cpu": DefaultRuns((RESIDUAL, HIGHWAY, PLAIN), CPU_STEPS)},
    "gates": {"cpu": DefaultRuns((HIGHWAY,), CPU_STEPS)},
    "landscape": {"cpu": DefaultRuns((RESIDUAL, PLAIN), CPU_STEPS)},
    "hessian": {"cpu": DefaultRuns((RESIDUAL, PLAIN), CPU_STEPS)},
    "dynamics": {"cpu": DefaultRuns((RESIDUAL,), CPU_STEPS, snapshots=9)},
    "degradation": {
        "cpu": DefaultRuns((PLAIN, RESIDUAL), CPU_STEPS, snapshots=9, depths=(20, 32, 44, 56), seeds=2),
        # He et al. 2015, Sec. 4.2: 64k iterations, lr /10 at 32k and 48k, a 45k/5k train/validation split
        "paper": DefaultRuns(
            (PLAIN, RESIDUAL),
            64000,
            snapshots=0,
            recipe="he2015-cifar",
            data="cifar10",
            depths=(20, 32, 44, 56),
            seeds=2,
            changes={"val_size": 5000},
        ),
    },
    "scaling": {
        # no warm-up and a constant lr of 0.1 (He et al. 2015's), high enough to expose an exploding start
        "cpu": DefaultRuns(
            ("resmlp_identity_20",),
            200,
            snapshots=0,
            depths=(30, 100, 200),
            seeds=2,
            changes={"lr": 0.1, "warmup_epochs": 0.0, "schedule": "constant"},
        ),
        "paper": DefaultRuns(  # 10 epochs of Fashion-MNIST at batch 128
            ("resmlp_identity_20",),
            4690,
            snapshots=0,
            depths=(30, 100, 300, 1000),
            seeds=2,
            changes={"lr": 0.1, "warmup_epochs": 0.0, "schedule": "constant"},
        ),
    },
}


def default_runs(name: str, budget: str) -> DefaultRuns:
    """The default runs of instrument ``name`` on ``budget`` (the cpu row where there is no paper row)."""
    rows = DEFAULT_RUNS[name]
    return rows.get(budget, rows["cpu"])


def defaults_text(name: str) -> dict[str, str]:
    """What ``--model``, ``--steps`` (and, where the table sweeps depth, ``--depths`` and ``--seeds``) default to,
    per budget, for ``resnets study NAME --help``."""
    rows = DEFAULT_RUNS.get(name)
    if not rows:
        return {}

    def per_budget(value: Callable[[DefaultRuns], str]) -> str:
        return "; ".join(f"{budget}: {value(row)}" for budget, row in rows.items())

    shown = {"models": per_budget(lambda r: " ".join(r.models)), "steps": per_budget(lambda r: str(r.steps))}
    if any(row.depths for row in rows.values()):
        shown["depths"] = per_budget(lambda r: ",".join(map(str, r.depths)))
        shown["seeds"] = per_budget(lambda r: str(r.seeds))
    return shown


@dataclass
class TrainedRun:
    """A trained run as an instrument reads it (see the module docstring); ``label`` names it in the numbers."""

    run: Run
    label: str
    context: Context

    @property
    def path(self) -> Path | None:
        return self.run.path

    @property
    def model_name(self) -> str:
        return self.run.record.model

    @cached_property
    def summary(self) -> dict[str, Any]:
        """What the run's summary.json says ({} for a weight file outside a run directory)."""
        if self.path is None or not (self.path / "summary.json").is_file():
            return {}
        return RunDir(self.path).read_json("summary.json")

    @property
    def steps(self) -> int | None:
        return self.summary.get("steps")

    @property
    def epochs(self) -> float | None:
        return self.summary.get("epochs")

    @property
    def test_error(self) -> float | None:
        """The run's own test error (%), as it recorded it."""
        return self.summary.get("test_error")

    @property
    def params(self) -> int | None:
        return self.summary.get("params")

    @property
    def steps_per_epoch(self) -> float | None:
        return self.steps / self.epochs if self.steps and self.epochs else None

    @property
    def snapshots(self) -> list[int]:
        return self.run.snapshots

    def at(self, step: int) -> Run:
        """The run's weights at kept snapshot ``step``, opened like the run itself."""
        return open_measured(self.context, self.run.path, f"step-{step}")

    def checkpoints(self) -> list[tuple[str, int | None, Run]]:
        """(label, step, run) of every kept snapshot, oldest first, then the run's own weights unless the last
        snapshot is them."""
        found: list[tuple[str, int | None, Run]] = [(f"step-{n}", n, self.at(n)) for n in self.snapshots]
        if not self.snapshots or self.steps not in self.snapshots:
            found.append((self.run.checkpoint.stem, self.steps, self.run))
        return found

    def step_log(self) -> list[dict[str, float]]:
        """The rows of steps.csv: step, lr, the batch's loss and error (%)."""
        return read_step_log(self.path) if self.path else []

    def epoch_log(self) -> list[dict[str, Any]]:
        """The per-epoch rows of metrics.jsonl."""
        return RunDir(self.path).read_metrics() if self.path else []

    def describe(self) -> dict[str, Any]:
        """What the numbers say of the run: where it is, its model, its length and its own test error."""
        data = self.run.record.data
        return {
            "label": self.label,
            "run": str(self.path or self.run.checkpoint),
            "model": self.model_name,
            "checkpoint": self.run.checkpoint.stem,
            "data": data.spec if data else None,
            "steps": self.steps,
            "epochs": self.epochs,
            "test_error": self.test_error,
            "seed": self.run.record.seed,
        }


def open_measured(context: Context, path: str | Path, checkpoint: str | None = None) -> Run:
    """The run at ``path`` opened to be measured on the study's device in the study's precision."""
    return open_run(path, checkpoint=checkpoint, device=context.device, amp=context.measuring_precision().amp)


def open_trained(context: Context, path: str | Path, label: str, checkpoint: str | None = None) -> TrainedRun:
    return TrainedRun(open_measured(context, path, checkpoint), label, context)


def trained_runs(name: str, options: TrainedOptions, context: Context, models: Sequence[str] = ()) -> list[TrainedRun]:
    """The ``--run`` directories, opened; else a default run of each model (``models``, ``--model``, else the
    table's), trained into OUT/runs if missing. Labels are model names, made unique."""
    if options.runs:
        paths = [Path(p) for p in options.runs]
    else:
        plan = default_runs(name, context.budget)
        steps = options.steps or plan.steps
        chosen = models or options.models or plan.models
        paths = [train_run(context, m, steps=steps, snapshots=plan.snapshots, plan=plan) for m in chosen]
    opened = [open_measured(context, p) for p in paths]
    labels = unique_labels([run.record.model for run in opened])
    return [TrainedRun(run, label, context) for run, label in zip(opened, labels)]


def unique_labels(names: Sequence[str]) -> list[str]:
    """The names, with #2, #3, ... where one occurs more than once."""
    labels: list[str] = []
    for name in names:
        count = sum(1 for other in labels if other.split("#")[0] == name)
        labels.append(name if count == 0 else f"{name}#{count + 1}")
    return labels


def over_snapshots(run: TrainedRun, headline: Callable[[Run], float | None], desc: str) -> dict[str, list[Any]]:
    """The headline quantity of ``run`` at every kept snapshot and at its final weights, oldest first."""
    steps, values = [], []
    for _, step, opened in run.context.progress(run.checkpoints(), desc):
        steps.append(step)
        values.append(headline(opened))
    return {"steps": steps, "values": values}


def run_path(context: Context, label: str, *, steps: int, seed: int, data: str | None = None) -> Path:
    """OUT/runs/LABEL-DATA-sSEED-STEPS: where a study keeps a run it trains (and finds it next time)."""
    name = Path((data or context.data or DEFAULT_DATA).rstrip("/")).name.replace(".", "_")
    precision = "-bf16" if context.measuring_precision().amp else ""  # fp32 and bf16 runs never stand in for each other
    return Path(context.out) / "runs" / f"{label}-{name}-s{seed}-{steps}{precision}"


def read_step_log(path: str | Path) -> list[dict[str, float]]:
    """The per-step log of a run directory (empty where there is none), also of a run that diverged before it
    could be opened."""
    return RunDir(path).read_steps()


def diverged_step(path: str | Path) -> int | None:
    """The step at which a run's loss became non-finite, from its per-step log (None: it did not diverge)."""
    rows = read_step_log(path)
    return rows[-1]["step"] if rows and not math.isfinite(rows[-1]["loss"]) else None


def train_run(
    context: Context,
    model: str,
    *,
    steps: int,
    seed: int = 0,
    snapshots: int = 4,
    plan: DefaultRuns | None = None,
    model_options: dict[str, Any] | None = None,
    label: str | None = None,
    changes: dict[str, Any] | None = None,
) -> Path:
    """Train ``model`` for ``steps`` steps on the study's data into OUT/runs (or reuse the finished run there).

    ``plan`` gives the recipe, data and changes of a row of :data:`DEFAULT_RUNS`; ``changes`` change further
    training settings. ``model_options`` change the registered model: ``label`` then names the run in place of
    the model, so that such runs never mix with the default ones. A run that diverged raises
    :class:`TrainingDivergedError` with its step, the first time and every time it is asked for again.
    """
    from resnets.train import TrainConfig, apply_overrides, resume_config, train

    plan = plan or DefaultRuns((model,), steps, snapshots)
    settings = {"recipe": plan.recipe, **plan.changes, **(changes or {})}
    data = context.data or plan.data or DEFAULT_DATA
    out = run_path(context, label or model, steps=steps, seed=seed, data=data)
    if (out / RECORD_FILE).exists() and (out / "summary.json").exists():
        return out
    diverged = diverged_step(out)
    if diverged is not None:
        raise TrainingDivergedError(
            f"{out} diverged at step {diverged} (its steps.csv says so); delete it to train it again", step=diverged
        )
    if has_checkpoint(out):  # interrupted after a checkpoint: continue it
        train(resume_config(out, {"max_steps": steps, "quiet": context.quiet}), resume=True)
        return out
    kept = tuple(sorted({round(i * steps / max(1, snapshots - 1)) for i in range(snapshots)})) if snapshots else ()
    overrides = {
        **settings,
        "model": model,
        "model_options": dict(model_options or {}),
        "data": data,
        "data_dir": context.data_dir,
        "seed": seed,
        "out": str(out),
        "device": context.device,
        "quiet": context.quiet,
        "max_steps": steps,
        "epochs": None,
        "snapshot_steps": kept,
        "amp": context.measuring_precision().amp,  # fp32 by default: the same run on every CPU
    }
    train(apply_overrides(TrainConfig(), overrides, "the study's default run"))
    return out
