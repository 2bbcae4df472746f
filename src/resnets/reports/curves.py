"""Training curves as in He et al. 2015 (figs. 1, 4, 6): error (%) against training time, with loss and lr.

Three panels share the epoch axis, so a jump in one lines up with its cause in another:

- error (%) per epoch: train, test and (with a validation split) val, each in its own colour;
- training loss per step: the raw batch losses faint behind a centred moving average over about 1% of the
  steps (a batch's loss is too noisy to read; an average over the steps around it is not, and unlike an
  exponential average it does not lag behind a drop in the learning rate);
- the learning rate per step, in a small panel of its own (on the loss's axis it would be unreadable).

With a validation split, a dotted line across the panels marks the evaluation that chose the best checkpoint (the
weights ``eval``, ``predict`` and ``export`` read), and a star its validation error. A run shorter than an epoch
has one evaluation, a dot per split: its figure is drawn on the step axis instead, with the per-step training
error, raw and smoothed, in the error panel.

The figure is drawn on an Agg canvas directly, so plotting never depends on (or changes) matplotlib's global
backend. It is redrawn at every epoch, so long runs draw at most ``MAX_POINTS`` points per per-step curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from resnets.io.atomic import atomic_write

#: The moving average of the per-step loss spans about this fraction of the steps (at least 3 steps).
SMOOTHING = 0.01
#: The most points a per-step curve is drawn with; longer runs are thinned to every k-th step.
MAX_POINTS = 4000
#: Colours of the splits, used by every figure of the package that shows them.
SPLIT_COLOURS = {"train": "tab:blue", "test": "tab:red", "val": "tab:green"}
LOSS_COLOUR, LR_COLOUR = "tab:purple", "0.25"
#: Runs with fewer evaluations than this are drawn per step (a run shorter than an epoch has one: a dot per split).
FEW_ROWS = 2
#: Pixel size of curves.png: FIGSIZE inches at DPI dots per inch.
FIGSIZE, DPI = (6.4, 6.8), 120

Step = tuple[int, float, float, float]  # (step, lr, loss, error %), as the engine keeps them and steps.csv holds


def smoothing_half_width(steps: int) -> int:
    """Half the moving average's window for a run of ``steps`` steps: the window (2h+1) is about 1% of them."""
    return max(1, round(steps * SMOOTHING / 2))


def moving_average(values: Sequence[float], half_width: int) -> np.ndarray:
    """Centred mean of ``values[i-h : i+h+1]`` at each i, the window cut at both ends.

    Non-finite values (the step that diverged) are left out of every mean rather than poisoning it; a window
    holding none but them is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(len(v))
    lo, hi = np.maximum(i - half_width, 0), np.minimum(i + half_width + 1, len(v))
    n = counts[hi] - counts[lo]
    return np.where(n > 0, (sums[hi] - sums[lo]) / np.maximum(n, 1), np.nan)


def steps_per_epoch(rows: Sequence[dict[str, Any]]) -> float | None:
    """Steps per epoch read off metrics rows (a row's step over its epoch); None before the first row."""
    for row in rows:
        if row.get("epoch") and row.get("step"):
            return row["step"] / row["epoch"]
    return None


def curves_figure(
    rows: Sequence[dict[str, Any]],
    steps: Sequence[Step] = (),
    *,
    per_epoch: float | None = None,
    model: str = "",
    data: str = "",
    run: str = "",
) -> Figure:
    """The figure of curves.png: errors per epoch, loss and learning rate per step (see the module docstring).

    ``rows`` are metrics rows (epoch, step, train_error, test_error, val_error, train_loss, lr);
    ``steps`` the per-step (step, lr, loss, error %) tuples; ``per_epoch`` the steps per epoch, which put
    steps on the epoch axis (default: read off the rows). Without steps (a run from before steps.csv) the
    loss and lr panels show the rows' per-epoch values instead.
    """
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    errors, losses, rates = figure.subplots(3, 1, sharex=True, height_ratios=(3, 2, 1))
    per_epoch = per_epoch or steps_per_epoch(rows)
    by_step = bool(steps) and (len(rows) < FEW_ROWS or not per_epoch)  # a short run: the step axis
    scale = None if by_step else per_epoch
    _plot_errors(errors, rows, by_step)
    if steps:
        _plot_steps(losses, rates, steps, scale)
        if by_step:
            _plot_step_errors(errors, steps)
    else:
        _plot_epoch_values(losses, rows, "train_loss", LOSS_COLOUR, "train loss (epoch mean)")
        _plot_epoch_values(rates, rows, "lr", LR_COLOUR, None)
    chosen = best_row(rows)
    if chosen is not None:
        _mark_best(errors, (losses, rates), chosen, by_step)
    errors.set_ylabel("error (%)")
    losses.set_ylabel("train loss")
    rates.set_ylabel("lr")
    rates.set_xlabel("step" if by_step or not per_epoch and steps else "epoch")
    for axes in (errors, losses, rates):
        axes.grid(True, alpha=0.3)
    for axes in (errors, losses):
        if axes.get_lines():
            axes.legend(fontsize=8)
    rates.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    rates.set_ylim(bottom=0)  # from zero, so that a small change of the rate does not look like a large one
    figure.suptitle(f"{model or 'model'} on {data or 'data'}")
    if run:
        errors.set_title(run, fontsize=8, color="0.4")
    return figure


def plot_curves(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    steps: Sequence[Step] = (),
    per_epoch: float | None = None,
    model: str = "",
    data: str = "",
    run: str = "",
) -> Path:
    """Write curves.png (see :func:`curves_figure`) atomically; returns its path."""
    figure = curves_figure(rows, steps, per_epoch=per_epoch, model=model, data=data, run=run)
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _plot_errors(axes: Axes, rows: Sequence[dict[str, Any]], by_step: bool = False) -> None:
    series = [("train", {"linewidth": 1.2, "linestyle": "--"}), ("test", {"linewidth": 2.2}), ("val", {})]
    for split, style in series:
        xs, ys = epoch_points(rows, f"{split}_error", x="step" if by_step else "epoch")
        if xs:
            marker = "o" if len(xs) < 20 else None
            size = 6 if by_step else 3  # a short run's few evaluations stand out from its per-step curve
            axes.plot(
                xs, ys, label=f"{split} error", color=SPLIT_COLOURS[split], marker=marker, markersize=size, **style
            )


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row whose validation error chose the best checkpoint: the first lowest, as training chooses it; None
    without a validation split (the test split never chooses)."""
    best: dict[str, Any] | None = None
    for row in rows:
        value = row.get("val_error")
        if isinstance(value, (int, float)) and math.isfinite(value) and (best is None or value < best["val_error"]):
            best = row
    return best


def _mark_best(errors: Axes, others: Sequence[Axes], row: dict[str, Any], by_step: bool) -> None:
    """A dotted line across the panels at the best checkpoint's evaluation, and a star on its validation error."""
    x = row["step"] if by_step else row["epoch"]
    where = f"step {row['step']:,}" if by_step else f"epoch {row['epoch']:g}"
    style = {"color": SPLIT_COLOURS["val"], "linestyle": ":", "linewidth": 1.2}
    errors.axvline(x, label=f"best checkpoint ({where}, chosen on val)", **style)
    errors.plot([x], [row["val_error"]], marker="*", markersize=11, color=SPLIT_COLOURS["val"], linestyle="none")
    for axes in others:
        axes.axvline(x, **style)


def _plot_step_errors(axes: Axes, steps: Sequence[Step]) -> None:
    """A short run's per-step training error (of each batch), faint, with its moving average."""
    series = step_series(steps, None)
    colour = SPLIT_COLOURS["train"]
    axes.plot(series.x, series.error, color=colour, alpha=0.25, linewidth=0.6, label="train error per step")
    axes.plot(series.x, series.error_smooth, color=colour, linewidth=1.8, label=f"mean of {series.window} steps")


class StepSeries(NamedTuple):
    """Per-step curves ready to draw: every ``stride``-th step of the run (all of them up to MAX_POINTS)."""

    x: np.ndarray  # epochs (step / steps per epoch), or steps when the steps per epoch are unknown
    lr: np.ndarray
    loss: np.ndarray  # the batch losses, NaN where one was not finite
    smooth: np.ndarray  # their centred moving average over ``window`` steps, taken before thinning
    window: int
    stride: int
    error: np.ndarray  # the batch training errors (%)
    error_smooth: np.ndarray  # their moving average, as ``smooth``


def step_series(steps: Sequence[Step], per_epoch: float | None) -> StepSeries:
    """The loss and learning-rate curves of ``steps`` on the epoch axis, smoothed, then thinned for drawing."""
    number = np.array([s[0] for s in steps], dtype=np.float64)
    lr = np.array([s[1] for s in steps], dtype=np.float64)
    loss = np.array([s[2] for s in steps], dtype=np.float64)
    error = np.array([s[3] for s in steps], dtype=np.float64)
    half = smoothing_half_width(len(steps))
    smooth, error_smooth = moving_average(loss, half), moving_average(error, half)
    stride = max(1, math.ceil(len(steps) / MAX_POINTS))
    x = number / per_epoch if per_epoch else number
    loss, error = np.where(np.isfinite(loss), loss, np.nan), np.where(np.isfinite(error), error, np.nan)
    thin = slice(None, None, stride)
    return StepSeries(
        x[thin], lr[thin], loss[thin], smooth[thin], 2 * half + 1, stride, error[thin], error_smooth[thin]
    )


def _plot_steps(losses: Axes, rates: Axes, steps: Sequence[Step], per_epoch: float | None) -> None:
    series = step_series(steps, per_epoch)
    losses.plot(series.x, series.loss, color=LOSS_COLOUR, alpha=0.25, linewidth=0.6, label="per step")
    losses.plot(series.x, series.smooth, color=LOSS_COLOUR, linewidth=1.8, label=f"mean of {series.window} steps")
    rates.plot(series.x, series.lr, color=LR_COLOUR, linewidth=1.2)


def _plot_epoch_values(axes: Axes, rows: Sequence[dict[str, Any]], key: str, colour: str, label: str | None) -> None:
    xs, ys = epoch_points(rows, key)
    if xs:
        axes.plot(xs, ys, color=colour, marker="o", markersize=3, label=label)


def epoch_points(rows: Sequence[dict[str, Any]], key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    """(epochs, values) of the metrics rows that measured ``key`` (a run without a test split has None or NaN);
    ``x="step"`` gives their steps instead of their epochs."""
    points = [(row[x], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
    points = [(x, y) for x, y in points if math.isfinite(y)]
    return [x for x, _ in points], [y for _, y in points]
