"""What a finished run reports: summary.json and the final line, both about the checkpoint the commands use.

A run with a validation split keeps two checkpoints: ``last`` and ``best`` (chosen on the validation split, never
on the test split). ``eval``, ``predict`` and ``export`` read the run's default checkpoint (``best`` where a
validation split chose one, else ``last``), so the headline figures here are that checkpoint's: the final line,
summary.json and ``resnets eval RUN`` name the same checkpoint and give the same test error. The last epoch's
figures stay in summary.json under ``last``.
"""

from __future__ import annotations

import math
from typing import Any

from resnets.words import counted

#: The per-epoch figures of a metrics row that summary.json carries for a checkpoint.
ROW_FIGURES = ("test_error", "test_loss", "train_error")


def run_summary(
    config: Any,  # resnets.train.TrainConfig
    session: Any,  # resnets.train.session.Session
    state: Any,  # resnets.train.state.RunCounters
    rows: list[dict[str, Any]],
    run_path: Any,
    steps_per_epoch: int,
) -> dict[str, Any]:
    """summary.json: the figures of the run's default checkpoint, the run's length and speed, the last epoch's."""
    checkpoint = session.record.default_checkpoint  # what eval, predict and export use by default
    last = rows[-1] if rows else {}
    chosen = last
    if checkpoint == "best":
        chosen = next((row for row in rows if row["epoch"] == state.best_epoch), {})
    figures = {key: _number(chosen.get(key)) for key in ROW_FIGURES}
    summary = {
        "model": config.model,
        "data": session.bundle.name,
        "params": sum(p.numel() for p in session.model.parameters()),
        "checkpoint": checkpoint,
        "checkpoint_epoch": chosen.get("epoch"),  # the epoch whose weights the checkpoint holds
        "test_accuracy": 100.0 - figures["test_error"],
        **figures,
        "epochs": round(state.epoch + state.batch / steps_per_epoch, 4),
        "steps": state.step,
        "wall_time_s": state.wall_time_s,
        "images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else math.nan,
        "run_dir": str(run_path),
    }
    if config.recipe.ema_decay > 0:  # the figures and the weight file are the weights' moving average
        summary["weights"] = f"ema (decay {config.recipe.ema_decay:g})"
    if "val_error" in last:
        summary["val_error"] = _number(chosen.get("val_error"))
        summary["best"] = {
            "epoch": state.best_epoch,
            "val_error": state.best_error,
            "test_error": _number(chosen.get("test_error")),
        }
        summary["last"] = {"epoch": last["epoch"], "val_error": _number(last.get("val_error"))} | {
            key: _number(last.get(key)) for key in ROW_FIGURES
        }
    return summary


def final_line(summary: dict[str, Any]) -> str:
    """The one line ``resnets train`` ends with: the default checkpoint's test figures, the length, the folder."""
    chosen = f"checkpoint {summary['checkpoint']}"
    if summary["checkpoint"] == "best":
        epoch = summary["checkpoint_epoch"]
        chosen += (
            f" (epoch {epoch:g}, chosen on val error {summary['best']['val_error']:.2f}%)"
            if epoch is not None
            else " (none saved: the validation error was never finite)"
        )
    compute = summary.get("compute")
    work = ""
    if compute:  # counted compute, and the share of this machine's measured peak it ran at
        work = f", {compute['pflop']:.3g} PFLOP at {100 * compute['peak_share']:.0f}% of this machine's peak"
    return (
        f"test accuracy: {summary['test_accuracy']:.2f}% (test error {summary['test_error']:.2f}%) of {chosen}, "
        f"after {counted(summary['epochs'], 'epoch')}, {counted(summary['steps'], 'step')}, "
        f"{summary['wall_time_s']:.0f} s{work}; run dir: {summary['run_dir']}"
    )


def _number(value: Any) -> float:
    """A row's figure, NaN where it was not measured (a run without a test split has None)."""
    return math.nan if value is None else value
