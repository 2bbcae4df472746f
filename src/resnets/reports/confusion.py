"""A confusion matrix as a PNG: true classes down, predicted classes across, class names on both axes.

Colours are row-normalised (the fraction of each true class predicted as each class), so that rare and
common classes are read on one scale; the cells print the counts, or the percentages with
``normalize=True``. Drawn on a bare Agg figure, so it never needs a display or touches pyplot's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from resnets.io.atomic import atomic_write

_MAX_ANNOTATED = 30  # above this many classes the cell numbers would be unreadable: colours only


def row_normalize(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of a class with no samples stay zero)."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)


def plot_confusion(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    *,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Write the matrix (rows: true class, columns: predicted class) to ``path`` as a PNG, atomically through the
    write guard; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=np.int64)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(classes) != k:
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(classes)} class names")
    fractions = row_normalize(counts)
    side = min(4.0 + 0.45 * k, 30.0)  # inches: room for the labels, bounded for 100+ classes
    figure = Figure(figsize=(side + 1.5, side), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    names = [str(c) for c in classes]
    fontsize = 9 if k <= 12 else 7 if k <= 30 else 5
    axes.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=fontsize)
    axes.set_yticks(range(k), names, fontsize=fontsize)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title + (" (row %)" if normalize else " (counts)"))
    if k <= _MAX_ANNOTATED:
        for i in range(k):
            for j in range(k):
                text = f"{100 * fractions[i, j]:.0f}" if normalize else str(counts[i, j])
                colour = "white" if fractions[i, j] > 0.5 else "black"
                axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))  # its folder too, through the write guard
    return path
