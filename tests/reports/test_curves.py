"""curves.png: errors per epoch in distinct colours, the per-step loss and its moving average, the lr panel, a title."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from resnets.reports import curves
from resnets.reports.curves import (
    MAX_POINTS,
    curves_figure,
    moving_average,
    plot_curves,
    smoothing_half_width,
    step_series,
    steps_per_epoch,
)

# Two epochs of four steps: (step, lr, loss, error %).
LOSSES = [4.0, 2.0, 3.0, 1.0, 5.0, 0.0, 2.0, 2.0]
LRS = [0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.2, 0.1]
STEPS = [(i + 1, lr, loss, 50.0) for i, (lr, loss) in enumerate(zip(LRS, LOSSES))]
ROWS = [
    {"epoch": 1, "step": 4, "lr": 0.4, "train_loss": 2.5, "train_error": 40.0, "test_error": 45.0, "val_error": 47.0},
    {"epoch": 2, "step": 8, "lr": 0.1, "train_loss": 2.25, "train_error": 30.0, "test_error": 38.0, "val_error": 39.0},
]


def _lines(axes):
    """The labelled lines of a panel (matplotlib names unlabelled ones ``_childN``)."""
    return {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}


def test_moving_average_is_the_centred_mean_cut_at_the_ends():
    # half width 1: the mean of each value and its neighbours; the end windows hold two values.
    assert moving_average([1, 2, 3, 4, 10], 1).tolist() == pytest.approx([1.5, 2.0, 3.0, 17 / 3, 7.0])
    assert moving_average([1, 2, 3, 4, 10], 2).tolist() == pytest.approx([2.0, 2.5, 4.0, 19 / 4, 17 / 3])


def test_moving_average_leaves_out_a_diverged_step():
    assert moving_average([1.0, math.nan, 3.0, math.inf], 1).tolist() == pytest.approx([1.0, 2.0, 3.0, 3.0])
    assert np.isnan(moving_average([math.nan, math.nan, math.nan], 0)).all()


def test_the_window_spans_about_one_percent_of_the_steps():
    assert [2 * smoothing_half_width(n) + 1 for n in (2, 100, 1000, 39_000)] == [3, 3, 11, 391]


def test_steps_per_epoch_is_read_off_the_rows():
    assert steps_per_epoch(ROWS) == 4.0
    assert steps_per_epoch([{"epoch": 0.5, "step": 195}]) == 390.0
    assert steps_per_epoch([]) is None


def test_errors_are_per_epoch_in_distinct_colours():
    figure = curves_figure(ROWS, STEPS, per_epoch=4, model="resnet20", data="cifar10", run="run-7")
    errors = figure.axes[0]
    lines = _lines(errors)
    assert set(lines) == {"train error", "test error", "val error", "best checkpoint (epoch 2, chosen on val)"}
    colours = {label: to_rgba(line.get_color()) for label, line in lines.items() if label.endswith("error")}
    assert len(set(colours.values())) == 3  # train, test and val are told apart by colour
    assert list(lines["train error"].get_xdata()) == [1, 2]
    assert list(lines["train error"].get_ydata()) == [40.0, 30.0]
    assert list(lines["test error"].get_ydata()) == [45.0, 38.0]
    assert list(lines["val error"].get_ydata()) == [47.0, 39.0]


def test_the_loss_panel_holds_raw_and_smoothed_per_step_loss_on_the_epoch_axis():
    figure = curves_figure(ROWS, STEPS, per_epoch=4)
    lines = _lines(figure.axes[1])
    assert set(lines) == {"per step", "mean of 3 steps"}
    raw, smooth = lines["per step"], lines["mean of 3 steps"]
    assert list(raw.get_xdata()) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]  # step / 4 steps per epoch
    assert list(raw.get_ydata()) == LOSSES
    # The mean over each step and its neighbours, by hand: (4+2)/2, (4+2+3)/3, (2+3+1)/3, ...
    expected = [3.0, 3.0, 2.0, 3.0, 2.0, 7 / 3, 4 / 3, 2.0]
    assert list(smooth.get_ydata()) == pytest.approx(expected)
    assert raw.get_alpha() < 1.0 and (smooth.get_alpha() or 1.0) == 1.0  # the raw curve is faint behind


def test_the_lr_panel_shows_each_steps_learning_rate_below_the_others():
    figure = curves_figure(ROWS, STEPS, per_epoch=4)
    errors, losses, rates = figure.axes
    line, best = rates.get_lines()  # the lr, and the best checkpoint's line across every panel
    assert list(best.get_xdata()) == [2, 2]
    assert list(line.get_ydata()) == LRS
    assert list(line.get_xdata()) == [s / 4 for s in range(1, 9)]
    assert rates.get_ylabel() == "lr" and rates.get_xlabel() == "epoch"
    assert rates.get_position().y1 <= losses.get_position().y0 <= errors.get_position().y0
    assert rates.get_position().height < losses.get_position().height < errors.get_position().height
    assert rates.get_shared_x_axes().joined(rates, errors)  # the panels line up on one epoch axis


def test_the_steps_per_epoch_default_to_the_rows():
    figure = curves_figure(ROWS, STEPS)
    assert list(figure.axes[2].get_lines()[0].get_xdata()) == [s / 4 for s in range(1, 9)]
    assert figure.axes[2].get_xlabel() == "epoch"


def test_the_title_names_the_model_the_data_and_the_run():
    figure = curves_figure(ROWS, STEPS, model="resnet56", data="cifar10", run="resnet56-cifar10-20261101")
    assert figure.get_suptitle() == "resnet56 on cifar10"
    assert figure.axes[0].get_title() == "resnet56-cifar10-20261101"
    assert figure.axes[0].title.get_fontsize() < figure._suptitle.get_fontsize()


def test_without_steps_the_panels_show_the_rows_per_epoch_values():
    figure = curves_figure([{**row, "val_error": None} for row in ROWS])  # no validation split: no best marker
    (loss,) = figure.axes[1].get_lines()
    (lr,) = figure.axes[2].get_lines()
    assert list(loss.get_ydata()) == [2.5, 2.25] and list(lr.get_ydata()) == [0.4, 0.1]


def test_a_run_without_a_test_split_draws_no_test_line():
    rows = [{**row, "test_error": None if i else math.nan} for i, row in enumerate(ROWS)]
    assert "test error" not in _lines(curves_figure(rows, STEPS).axes[0])


def test_long_runs_are_thinned_after_smoothing():
    n = 10_000
    steps = [(i + 1, 0.1, float(i % 7), 0.0) for i in range(n)]
    series = step_series(steps, per_epoch=100)
    assert series.stride == 3 and len(series.x) == math.ceil(n / 3) <= MAX_POINTS
    full = moving_average([float(i % 7) for i in range(n)], smoothing_half_width(n))
    assert series.smooth.tolist() == full[::3].tolist()  # smoothed over every step, then thinned
    assert series.x[:2].tolist() == [0.01, 0.04]


def test_the_best_checkpoint_is_marked_where_the_validation_split_chose_it():
    rows = [{**row, "val_error": val} for row, val in zip(ROWS, (35.0, 39.0))]  # epoch 1 was best on val
    assert curves.best_row(rows) is rows[0]
    assert curves.best_row([{**ROWS[0], "val_error": 5.0}, {**ROWS[1], "val_error": 5.0}])["epoch"] == 1  # the first
    assert curves.best_row([{**row, "val_error": math.nan} for row in ROWS]) is None
    errors, losses, rates = curves_figure(rows, STEPS, per_epoch=4).axes
    marker = _lines(errors)["best checkpoint (epoch 1, chosen on val)"]
    assert list(marker.get_xdata()) == [1, 1]  # a vertical line at epoch 1 ...
    star = next(line for line in errors.get_lines() if line.get_marker() == "*")
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([1], [35.0])  # ... and a star on its val error
    for axes in (losses, rates):  # across the other panels too
        assert any(list(line.get_xdata()) == [1, 1] for line in axes.get_lines())
    assert not any(line.get_marker() == "*" for line in curves_figure(ROWS[:1], STEPS[:4]).axes[1].get_lines())


def test_a_run_shorter_than_an_epoch_is_drawn_per_step_not_as_a_dot():
    """50 steps of a 468-step epoch: one evaluation, so the error panel draws each step's training error."""
    steps = [(s, 0.1, 2.0 - s / 50, 90.0 - s) for s in range(1, 51)]
    row = {"epoch": 0.1068, "step": 50, "lr": 0.1, "train_loss": 1.5, "train_error": 65.0, "test_error": 60.0}
    errors, losses, rates = curves_figure([row], steps, per_epoch=468).axes
    lines = _lines(errors)
    assert list(lines["train error per step"].get_ydata()) == [90.0 - s for s in range(1, 51)]
    assert list(lines["train error per step"].get_xdata()) == list(range(1, 51))  # on the step axis
    assert lines["mean of 3 steps"].get_ydata()[10] == pytest.approx(79.0)  # the steps 10-12 averaged
    assert list(lines["test error"].get_xdata()) == [50]  # the one evaluation, at its step
    assert list(losses.get_lines()[0].get_xdata()) == list(range(1, 51)) and rates.get_xlabel() == "step"


def test_plot_curves_writes_a_png_of_the_figure_size(tmp_path):
    path = plot_curves(ROWS, tmp_path / "curves.png", steps=STEPS, per_epoch=4, model="m", data="d", run="r")
    assert path == tmp_path / "curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(curves.FIGSIZE[0] * curves.DPI), round(curves.FIGSIZE[1] * curves.DPI))
        assert image.size == (768, 816)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # the atomic write left no temporary file


def test_training_draws_its_steps_model_and_data(tmp_path, monkeypatch):
    """The engine hands plot_curves the run's steps, its steps per epoch and its model and data names."""
    from resnets.runs import RunDir
    from resnets.train import train
    from tests.train.conftest import TINY, tiny_bundle, tiny_config

    calls = []
    real = curves.plot_curves

    def spy(rows, path, **options):
        calls.append((list(rows), dict(options, steps=list(options["steps"]))))
        return real(rows, path, **options)

    monkeypatch.setattr(curves, "plot_curves", spy)
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), data=tiny_bundle(n_train=64, n_test=16))
    assert len(calls) == 2  # redrawn at each epoch
    rows, options = calls[-1]
    saved = [(s["step"], s["lr"], s["loss"], s["error"]) for s in RunDir(run).read_steps()]
    assert options["steps"] == saved and len(saved) == 8
    assert options["per_epoch"] == 4 and options["model"] == TINY and options["data"] == "tiny"
    assert options["run"] == "run" and [r["step"] for r in rows] == [4, 8]
    with Image.open(run / "curves.png") as image:
        assert image.size == (768, 816)
