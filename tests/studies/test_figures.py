"""The instruments' figures keep every title, label and outside legend on the canvas they save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from resnets.studies.figures import legend_outside, new_figure, save_figure, titled


def test_a_legend_outside_the_axes_and_the_title_stay_on_the_saved_canvas(tmp_path: Path) -> None:
    figure, grid = new_figure(4.0, 3.0, cols=2, rows=1)
    for ax in grid[0]:
        for k in range(3):
            ax.plot(np.arange(5), np.arange(5) * k, label=f"a rather long legend label {k}")
        ax.set_ylabel("a y label")
    legend_outside(grid[0][1])
    legend = grid[0][1].get_legend()
    titled(figure, "what it shows", "how long the nets trained")
    path = save_figure(figure, tmp_path, "legend")
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox
    for artist in (legend, figure._suptitle, grid[0][0].yaxis.label):  # _suptitle: the title as an artist
        box = artist.get_window_extent(renderer)
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1, artist
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.shape == (round(canvas.height), round(canvas.width))
    right = pixels[:, int(legend.get_window_extent(renderer).x0) :]
    assert (right < 128).any()  # the legend's text is drawn in the saved file, not cut off
