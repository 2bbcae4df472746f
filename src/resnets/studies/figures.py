"""The figures of the instruments: one canvas each, a title that says what it shows and how long the nets
trained, legends that stay off the data, and atomic PNG writes.

Plotting never touches matplotlib's global state (each figure has its own Agg canvas), so instruments can run
in any process, and a figure drawn twice from the same numbers gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from resnets.io.atomic import atomic_write

UNTRAINED = "untrained nets (at initialisation)"


def new_figure(width: float = 6.4, height: float = 4.2, cols: int = 1, rows: int = 1) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas and its axes (one Axes, or rows of columns where there are several)."""
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes if rows * cols > 1 else axes[0][0]


def titled(figure: Figure, what: str, training: str) -> Figure:
    """The figure's title: what it shows, then how long its nets were trained (or that they were not)."""
    figure.suptitle(f"{what}\n{training}", fontsize=10)
    return figure


def legend_outside(ax: Axes, **options: Any) -> None:
    """The axes' legend to their right, where it cannot cover a bar or a point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **options)


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> Path:
    """Write ``OUT/NAME.png`` atomically (legends outside the axes included), making ``OUT`` through the write
    guard as the file is; returns its path."""
    path = Path(out_dir) / f"{name}.png"
    figure.tight_layout()  # makes room for titles and for legends outside the axes, so the canvas holds them all
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))  # not bbox_inches="tight": a third draw
    return path


def trained_for(runs: Sequence[dict[str, Any]]) -> str:
    """How long the measured nets trained, from the run descriptions of :func:`TrainedRun.describe`:
    ``resnet20, plain20: 400 steps (0.85 epochs) on fashion-mnist``, grouped where the runs differ."""
    if not runs:
        return UNTRAINED
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(run_length(run), []).append(run["label"])
    return "; ".join(f"{', '.join(labels)}: {length}" for length, labels in groups.items())


def run_length(run: dict[str, Any]) -> str:
    """``trained 400 steps (0.853 epochs) on fashion-mnist`` for one run description."""
    steps, epochs, data = run.get("steps"), run.get("epochs"), run.get("data") or "its data"
    if steps is None:
        return f"trained elsewhere on {data} (length not recorded)"
    epoch_text = f" ({epochs:.3g} epoch{'' if epochs == 1 else 's'})" if isinstance(epochs, (int, float)) else ""
    return f"trained {steps} step{'' if steps == 1 else 's'}{epoch_text} on {data}"
