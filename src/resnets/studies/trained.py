"""The trained runs an instrument measures: the one reader of a run directory, and the one way to train them.

:class:`TrainedRun` is how every instrument reads a run: the model opened on the study's device in the study's
precision (fp32 unless ``--precision fast``, whatever the run trained in), its kept weight snapshots, its
per-step log and what ``summary.json`` says of its training (steps, epochs, test error), and how far its test
error is from what its net and recipe reach at convergence (:mod:`resnets.studies.plans`). No instrument reads
a run's files itself.

Runs given with ``--run`` are measured as they are. Otherwise an instrument trains its default runs (the
table :data:`resnets.studies.plans.DEFAULT_RUNS`) once into ``OUT/runs/LABEL-DATA-RECIPE-sSEED-STEPS``,
keeping weight snapshots along the way, and every instrument pointed at the same ``--out`` reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from resnets.errors import TrainingDivergedError
from resnets.runs import Run, RunDir, open_run
from resnets.runs.checkpoint import has_checkpoint
from resnets.runs.record import RECORD_FILE
from resnets.studies.contract import Context, TrainedOptions
from resnets.studies.job import current_job
from resnets.studies.plans import CONVERGED_WITHIN, DEFAULT_DATA, RunSpec, default_runs, find_reference


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
            "convergence": self.convergence(),
        }

    def convergence(self) -> dict[str, Any] | None:
        """How far the run's test error is from what its net and recipe reach at convergence on its data (None
        where no reference is known: a run of another net, recipe or data set)."""
        record = self.run.record
        found = find_reference(
            record.model, record.model_options, record.recipe, record.data.name if record.data else ""
        )
        if found is None or self.test_error is None:
            return None
        label, reference = found
        gap = float(self.test_error) - reference.test_error
        return {
            "reference_error": reference.test_error,
            "reference_steps": reference.steps,
            "reference": reference.how,
            "net": label,
            "gap": gap,
            "within": CONVERGED_WITHIN,
            "converged": gap <= CONVERGED_WITHIN,
        }


def open_measured(context: Context, path: str | Path, checkpoint: str | None = None) -> Run:
    """The run at ``path`` opened to be measured on the study's device in the study's precision."""
    return open_run(path, checkpoint=checkpoint, device=context.device, amp=context.measuring_precision().amp)


def open_trained(context: Context, path: str | Path, label: str, checkpoint: str | None = None) -> TrainedRun:
    return TrainedRun(open_measured(context, path, checkpoint), label, context)


def trained_runs(name: str, options: TrainedOptions, context: Context, models: Sequence[str] = ()) -> list[TrainedRun]:
    """The ``--run`` directories, opened; else the runs of :func:`default_specs`, trained into OUT/runs if
    missing. Labels are the specs' (default runs) or the model names (``--run``), made unique."""
    if options.runs:
        opened = [open_measured(context, p) for p in options.runs]
        labels = unique_labels([run.record.model for run in opened])
        return [TrainedRun(run, label, context) for run, label in zip(opened, labels)]
    specs = default_specs(name, options, context, models)
    paths = [train_run(context, spec) for spec in specs]
    labels = unique_labels([spec.label for spec in specs])
    return [TrainedRun(open_measured(context, p), label, context) for p, label in zip(paths, labels)]


def default_specs(name: str, options: Any, context: Context, models: Sequence[str] = ()) -> list[RunSpec]:
    """The runs instrument ``name`` trains without ``--run``: ``models`` or ``--model`` names as registered
    (with the first group's recipe and length), else its groups of :data:`DEFAULT_RUNS`, at ``--steps`` where
    given."""
    groups = default_runs(name, context.budget)
    if not groups:
        return []
    steps = getattr(options, "steps", None)
    chosen = list(models or getattr(options, "models", ()) or ())
    if chosen:
        return groups[0].as_registered(chosen, steps)
    return [spec for group in groups for spec in group.specs(steps=steps)]


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


def run_path(context: Context, spec: RunSpec) -> Path:
    """OUT/runs/LABEL-DATA-RECIPE-sSEED-STEPS: where a study keeps a run it trains (and finds it next time)."""
    name = Path(data_of(context, spec).rstrip("/")).name.replace(".", "_")
    precision = "-bf16" if context.measuring_precision().amp else ""  # fp32 and bf16 runs never stand in for each other
    return Path(context.out) / "runs" / f"{spec.label}-{name}-{spec.recipe}-s{spec.seed}-{spec.steps}{precision}"


def data_of(context: Context, spec: RunSpec) -> str:
    """The data set a run trains on: the study's ``--data``, else the spec's, else Fashion-MNIST."""
    return context.data or spec.data or DEFAULT_DATA


def read_step_log(path: str | Path) -> list[dict[str, float]]:
    """The per-step log of a run directory (empty where there is none), also of a run that diverged before it
    could be opened."""
    return RunDir(path).read_steps()


def diverged_step(path: str | Path) -> int | None:
    """The step at which a run's loss became non-finite, from its per-step log (None: it did not diverge)."""
    rows = read_step_log(path)
    return rows[-1]["step"] if rows and not math.isfinite(rows[-1]["loss"]) else None


def snapshot_steps(steps: int, snapshots: int) -> tuple[int, ...]:
    """The steps at which ``snapshots`` evenly spaced weight snapshots are kept, step 0 and the last included."""
    return tuple(sorted({round(i * steps / max(1, snapshots - 1)) for i in range(snapshots)})) if snapshots else ()


def is_trained(path: Path) -> bool:
    """Whether OUT/runs holds the finished run at ``path``."""
    return (path / RECORD_FILE).exists() and (path / "summary.json").exists()


def train_run(context: Context, spec: RunSpec) -> Path:
    """Train the run ``spec`` on the study's data into OUT/runs (or reuse the finished run there) to the end of
    its schedule: ``--max-steps`` alone, so that its length is the schedule's horizon.

    A run that diverged raises :class:`TrainingDivergedError` with its step, the first time and every time it is
    asked for again.
    """
    from resnets.train import TrainConfig, apply_overrides, resume_config, train

    out = run_path(context, spec)
    if is_trained(out):
        return out
    diverged = diverged_step(out)
    if diverged is not None:
        raise TrainingDivergedError(
            f"{out} diverged at step {diverged} (its steps.csv says so); delete it to train it again", step=diverged
        )
    job = current_job()
    job.training(str(out), f"training {spec.label} (seed {spec.seed}, {spec.steps} steps)")
    try:
        if has_checkpoint(out):  # interrupted after a checkpoint: continue it
            train(resume_config(out, {"max_steps": spec.steps, "quiet": context.quiet}), resume=True)
        else:
            overrides = {
                "recipe": spec.recipe,
                **spec.changes,
                "model": spec.model,
                "model_options": dict(spec.model_options),
                "data": data_of(context, spec),
                "data_dir": context.data_dir,
                "seed": spec.seed,
                "out": str(out),
                "device": context.device,
                "quiet": context.quiet,
                "max_steps": spec.steps,
                "epochs": None,
                "snapshot_steps": snapshot_steps(spec.steps, spec.snapshots),
                "amp": context.measuring_precision().amp,  # fp32 by default: the same run on every CPU
            }
            train(apply_overrides(TrainConfig(), overrides, "the study's default run"))
    finally:
        job.trained(str(out), read_compute(out))
    return out


def read_compute(path: Path) -> float | None:
    """The FLOPs a finished run counted in its summary.json (None where it has none)."""
    if not (path / "summary.json").is_file():
        return None
    found = RunDir(path).read_json("summary.json").get("compute") or {}
    return float(found["pflop"]) * 1e15 if found.get("pflop") is not None else None
