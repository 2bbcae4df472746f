"""Training curves as in He et al. 2015 (figs. 1, 4, 6): error (%) against training time.

Thin lines are training error, bold lines test error. The figure is drawn on an Agg canvas directly,
so plotting never depends on (or changes) matplotlib's global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from resnets.io.atomic import atomic_write


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG of train/test (and val) error against epoch from metrics rows; returns its path."""
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    epochs = [row["epoch"] for row in rows]
    series = [
        ("train_error", "train", {"linewidth": 1.0, "linestyle": "--", "color": "tab:blue"}),
        ("test_error", "test", {"linewidth": 2.2, "color": "tab:blue"}),
        ("val_error", "val", {"linewidth": 1.6, "color": "tab:orange"}),
    ]
    for key, label, style in series:
        points = [(e, row[key]) for e, row in zip(epochs, rows) if row.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, label=f"{label} error", marker="o" if len(points) < 20 else None, markersize=3, **style)
    axes.set_xlabel("epoch")
    axes.set_ylabel("error (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if rows:
        axes.legend()
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path
