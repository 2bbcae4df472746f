"""Loss landscapes along filter-normalised directions: residual nets against their plain twins (Li et al. 2018).

Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural Nets", NeurIPS, Sec. 6,
Fig. 5 and 7) plot the training loss around a trained net's weights θ along random filter-normalised
directions (see :mod:`resnets.studies.directions`): 1-D curves f(θ + α d) and 2-D surfaces
f(θ + α d1 + β d2). Skip connections keep the surface smooth and nearly convex as depth grows, while plain nets
turn chaotic; at 20 layers both are fairly convex, the gap shows at 56 and 110 layers.

Here the loss and top-1 error are measured by the one evaluation loop (``resnets.metrics.evaluate``, eval-mode
BN with the run's running statistics, the run's precision) on a fixed seeded subset of the training split fed
without augmentation, so the centre is exactly the run's own loss on those images. Each seed draws another pair
of directions (the subset stays). The paper's tool spreads the grid over MPI ranks and GPUs; this one moves the
weights of one model in place and reuses the same pre-made batches for every point.

The convex fraction within r = 1 is also followed over the run's kept snapshots, on a coarser grid
(``--snapshot-grid``) along the first seed's directions.

Measures (each mean ± spread over seeds):
- convex fraction within radius r: of the interior grid points with α² + β² <= r², the share where the
  discrete Hessian of the 2-D surface (central differences) is positive semi-definite (λmin >= 0);
- negative-curvature ratio within r: the paper's |λmin/λmax| (Fig. 7) for the 2-D surface, taken as
  max(-λmin, 0) / max(|λmin|, |λmax|): 0 where the surface curves upward in every direction, up to 1 where
  negative curvature dominates;
- sharpness at a: the mean loss rise at α = ±a over the centre along the 1-D curve;
- roughness: the 1-D curve's total variation over that of a curve monotone on each side of the centre
  (1 for a bowl, more for every extra bump).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.device import Precision
from resnets.errors import ConfigError
from resnets.metrics import evaluate
from resnets.runs import Run
from resnets.studies.common import BN_EVAL_MODE, Batches, fmt, kind, number, over_training_rows, spread, subset_batches
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.directions import Direction, displaced, random_direction
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.trained import TrainedRun, over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "landscape"
CLAIM = (
    "Skip connections keep the training-loss landscape along filter-normalised random directions smooth and "
    "nearly convex, while plain nets' landscapes turn chaotic and non-convex as depth grows; at 20 layers both "
    "are fairly convex (Li, Xu, Taylor, Studer & Goldstein 2018, 'Visualizing the Loss Landscape of Neural Nets', "
    "NeurIPS, Sec. 6, Fig. 5 and 7)."
)
LI = "Li, Xu, Taylor, Studer & Goldstein 2018"
THRESHOLDS = {
    "more_convex": Threshold(
        0.0,
        above=True,
        unit="",
        paper="Fig. 5 (CIFAR-10, 2-D filter-normalised contours): without shortcuts the surface goes from nearly "
        "convex at 20 layers to chaotic at 56 and 110, with wide non-convex regions; with shortcuts it stays "
        "nearly convex, its 0.1-level contour almost the same at 20 and 110 layers; at 20 layers the shortcuts "
        "make little visible difference. The |λmin/λmax| maps show the convex-looking regions have negligible "
        "negative curvature; no convex share is given",
        source=f"{LI}, Sec. 6 (The Effect of Network Depth; Shortcut Connections to the Rescue), Fig. 5 and 7",
        why="our line: the residual net's convex fraction within r = 1 minus its plain twin's above 0 (where "
        "they tie: the plain net's negative-curvature ratio minus the residual net's), per pair of directions",
    ),
}
SURFACE_SEED = 0  # the directions of the surfaces followed over training


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(1000, "training images per evaluation (about 0.9 s of resnet20 on 2 CPU cores)")
    grid: int = option(9, "points per axis of the 2-D surface (9 divides the 1-D line's spacing)")
    seeds: int = option(2, "pairs of random directions")
    snapshot_grid: int = option(5, "points per axis of the surfaces measured at each kept snapshot")

    def __post_init__(self) -> None:
        super().__post_init__()
        for flag, value in (("--grid", self.grid), ("--snapshot-grid", self.snapshot_grid)):
            if value < 3:
                raise ConfigError(
                    f"{flag} {value} is too coarse: the curvature measures need at least 3 points per axis"
                )


LINE_POINTS = 41  # points of the 1-D curve over α in [-1, 1] (spacing 0.05)
RADII = (0.5, 1.0)  # radii of the convexity measures, in units of the filter-normalised directions
SHARPNESS_AT = (0.5, 1.0)  # α of the sharpness measure
SUBSET_SEED = 0  # the training subset is the same for every direction seed


def coordinates(points: int) -> list[float]:
    """``points`` evenly spaced values over [-1, 1], each an exact ratio of integers (so grids share points)."""
    if points < 2:
        return [0.0]
    return [(2 * i - (points - 1)) / (points - 1) for i in range(points)]


def training_subset(run: Run, samples: int, seed: int = SUBSET_SEED) -> Batches:
    """``samples`` training images drawn by ``seed`` (all if fewer), batched and normalised without augmentation."""
    return subset_batches(run, samples, seed, split="train")


def directions(model: torch.nn.Module, seed: int) -> tuple[Direction, Direction]:
    """The seed's two filter-normalised directions (d1 also spans the 1-D curve)."""
    generator = torch.Generator().manual_seed(seed)
    return random_direction(model, generator), random_direction(model, generator)


def surfaces(
    model: torch.nn.Module,
    batches: Batches,
    num_classes: int,
    along: Sequence[Direction],
    line: Sequence[float],
    grid: Sequence[float],
    *,
    precision: Precision | None = None,
    centre: tuple[float, float] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Loss and top-1 error (%) along ``line`` (θ + α d1) and on ``grid`` x ``grid`` (θ + α d1 + β d2).

    The plane's rows run over β and its columns over α. Points shared by the line and the plane are measured
    once; ``centre`` (loss, error) at θ may be given when already measured. θ is restored bit for bit.
    """
    values: dict[tuple[float, float], tuple[float, float]] = {} if centre is None else {(0.0, 0.0): centre}
    wanted = [(a, 0.0) for a in line] + [(a, b) for b in grid for a in grid]
    todo = [p for p in dict.fromkeys(wanted) if p not in values]
    with displaced(model, along) as move:
        for point in progress(todo) if progress is not None else todo:
            move(point)
            result = evaluate(model, batches, num_classes, precision=precision)
            values[point] = (result.loss, result.top1_error)
    return {
        "line": {key: [values[(a, 0.0)][k] for a in line] for k, key in enumerate(("loss", "error"))},
        "plane": {key: [[values[(a, b)][k] for a in grid] for b in grid] for k, key in enumerate(("loss", "error"))},
        "evaluations": len(todo),
    }


def principal_curvatures(loss: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """λmin and λmax of the central-difference Hessian at each interior point of a (β, α) surface."""
    f, h2 = np.asarray(loss, dtype=np.float64), spacing * spacing
    centre = f[1:-1, 1:-1]
    faa = (f[1:-1, 2:] - 2 * centre + f[1:-1, :-2]) / h2  # along α (columns)
    fbb = (f[2:, 1:-1] - 2 * centre + f[:-2, 1:-1]) / h2  # along β (rows)
    fab = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * h2)
    mean, root = (faa + fbb) / 2, np.sqrt(((faa - fbb) / 2) ** 2 + fab**2)
    return mean - root, mean + root


def convexity(loss: Sequence[Sequence[float]], grid: Sequence[float], radius: float) -> dict[str, float]:
    """Convex fraction and mean negative-curvature ratio over interior points within ``radius`` (module docstring)."""
    if len(grid) < 3:
        return {"convex_fraction": math.nan, "negative_curvature_ratio": math.nan, "points": 0}
    low, high = principal_curvatures(np.asarray(loss), grid[1] - grid[0])
    inner = np.asarray(grid[1:-1])
    inside = np.hypot(inner[None, :], inner[:, None]) <= radius + 1e-9
    inside &= np.isfinite(low) & np.isfinite(high)
    scale = np.maximum(np.abs(low), np.abs(high))
    ratio = np.divide(np.maximum(-low, 0.0), scale, out=np.zeros_like(low), where=scale > 0)
    count = int(inside.sum())
    if not count:
        return {"convex_fraction": math.nan, "negative_curvature_ratio": math.nan, "points": 0}
    return {
        "convex_fraction": float((low[inside] >= 0).mean()),
        "negative_curvature_ratio": float(ratio[inside].mean()),
        "points": count,
    }


def sharpness(loss: Sequence[float], line: Sequence[float], at: float) -> float:
    """Mean loss rise at α = ±``at`` over the centre of a 1-D curve."""
    index = {a: i for i, a in enumerate(line)}
    if at not in index or -at not in index or 0.0 not in index:
        return math.nan
    return (loss[index[at]] + loss[index[-at]]) / 2 - loss[index[0.0]]


def roughness(loss: Sequence[float], line: Sequence[float]) -> float:
    """Total variation of a 1-D curve over |f(-1) - f(0)| + |f(1) - f(0)|: 1 when monotone on each side of 0."""
    f = np.asarray(loss, dtype=np.float64)
    c = list(line).index(0.0) if 0.0 in line else len(f) // 2
    monotone = abs(f[0] - f[c]) + abs(f[-1] - f[c])
    return float(np.abs(np.diff(f)).sum() / monotone) if monotone > 0 else math.nan


def measures(seeded: Sequence[dict[str, Any]], line: Sequence[float], grid: Sequence[float]) -> dict[str, Any]:
    """Every measure of the module docstring, per seed and as a spread over seeds."""
    per_seed: dict[str, list[float]] = {}
    for measured in seeded:
        found = {f"sharpness@{a:g}": sharpness(measured["line"]["loss"], line, a) for a in SHARPNESS_AT}
        found["roughness"] = roughness(measured["line"]["loss"], line)
        for r in RADII:
            shape = convexity(measured["plane"]["loss"], grid, r)
            found[f"convex_fraction@{r:g}"] = shape["convex_fraction"]
            found[f"negative_curvature_ratio@{r:g}"] = shape["negative_curvature_ratio"]
        for key, value in found.items():
            per_seed.setdefault(key, []).append(value)
    return {key: {**spread(values), "per_seed": values} for key, values in per_seed.items()}


def measure_run(trained: TrainedRun, options: Options, context: Context) -> dict[str, Any]:
    """The landscapes of one run for every seed, with its kind, unit count and measures."""
    run = trained.run
    line, grid = coordinates(LINE_POINTS), coordinates(options.grid)
    batches = training_subset(run, options.samples)
    seeded, centre = [], None
    for seed in range(options.seeds):
        along = directions(run.model, seed)
        measured = surfaces(
            run.model, batches, run.record.num_classes, along, line, grid, precision=run.precision, centre=centre,
            progress=partial(context.progress, desc=f"{NAME} {trained.label} seed {seed}"),
        )  # fmt: skip
        centre = (measured["line"]["loss"][line.index(0.0)], measured["line"]["error"][line.index(0.0)])
        seeded.append({"seed": seed, **measured})
    return {
        **trained.describe(),
        "kind": kind(run.model),
        "units": len(run.model.residual_blocks()),
        "centre": {"loss": centre[0], "error": centre[1]},
        "evaluations": sum(s["evaluations"] for s in seeded),
        "measures": measures(seeded, line, grid),
        "seeds": seeded,
        "over_training": over_snapshots(
            trained, lambda r: snapshot_convexity(r, options), f"{NAME} {trained.label} snapshots"
        ),
    }


def snapshot_convexity(run: Run, options: Options) -> float | None:
    """The convex fraction within r = 1 of a coarse surface along the first seed's directions."""
    grid = coordinates(options.snapshot_grid)
    along = directions(run.model, SURFACE_SEED)
    found = surfaces(run.model, training_subset(run, options.samples), run.record.num_classes, along, [0.0], grid,
                     precision=run.precision)  # fmt: skip
    return convexity(found["plane"]["loss"], grid, 1.0)["convex_fraction"]


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Landscapes of trained runs (default: the 56-layer speedrun twins) along seeded random directions."""
    runs = trained_runs(NAME, options, context)
    nets = {trained.label: measure_run(trained, options, context) for trained in runs}
    return {
        "settings": {
            "measured_on": "trained runs, eval mode, the run's weights in the study's precision",
            "split": "train, without augmentation (the paper plots training loss)",
            "subset": f"torch.randperm seeded with {SUBSET_SEED}, the same for every seed",
            "directions": "Gaussian (torch.Generator seeded by the seed: d1 then d2), filter-normalised to θ's "
            "filters; zero in biases and BN/LN parameters (1-D), buffers untouched",
            "line": f"{LINE_POINTS} points of α in [-1, 1] along d1",
            "grid": f"{options.grid} x {options.grid} points of (α, β) in [-1, 1]^2",
            "error": "top-1 error in percent",
            "convexity": "interior grid points within radius r; PSD: λmin >= 0 of the central-difference Hessian; "
            "ratio: max(-λmin, 0) / max(|λmin|, |λmax|)",
            "over_training": f"convex fraction within r = 1 of a {options.snapshot_grid} x {options.snapshot_grid} "
            f"surface along seed {SURFACE_SEED}'s directions, at every kept snapshot",
            "bn": BN_EVAL_MODE,
        },
        "trained": [r.describe() for r in runs],
        "line": coordinates(LINE_POINTS),
        "grid": coordinates(options.grid),
        "nets": nets,
        "pairs": [list(p) for p in _pairs(nets)],
    }


def _pairs(nets: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Each residual net against each plain net with as many units (twins)."""
    return [
        (r, p)
        for r in nets
        for p in nets
        if nets[r]["kind"] == "residual" and nets[p]["kind"] == "plain" and nets[r]["units"] == nets[p]["units"]
    ]


def _margins(res: dict[str, Any], plain: dict[str, Any]) -> tuple[float | None, ...]:
    """Per direction seed: the residual net's convex fraction within r = 1 minus the plain net's; where they tie,
    the plain net's negative-curvature ratio minus the residual net's (positive: the residual net is more convex)."""
    found = []
    for r, p in zip(res["seeds"], plain["seeds"]):
        fraction, ratio = "convex_fraction@1", "negative_curvature_ratio@1"
        a, b = res["measures"][fraction]["per_seed"], plain["measures"][fraction]["per_seed"]
        i = r["seed"]
        if a[i] is None or b[i] is None:
            found.append(None)
        elif a[i] != b[i]:
            found.append(a[i] - b[i])
        else:
            x, y = res["measures"][ratio]["per_seed"][i], plain["measures"][ratio]["per_seed"][i]
            found.append(None if x is None or y is None else y - x)
    return tuple(found)


def judge(numbers: dict[str, Any]) -> Verdict:
    """Residual against plain twin on convexity (the decision), with smoothness and sharpness reported alongside."""
    nets = numbers["nets"]
    checks, parts, moving = [], [], {}
    for r, p in numbers["pairs"]:
        m, n = nets[r]["measures"], nets[p]["measures"]
        checks.append(
            Check(
                "more_convex",
                f"convexity margin of {r} over {p}",
                _margins(nets[r], nets[p]),
                THRESHOLDS["more_convex"],
            )
        )
        parts.append(
            f"{r} against {p}: convex fraction within r=1 {fmt(m['convex_fraction@1'])} vs "
            f"{fmt(n['convex_fraction@1'])}, negative-curvature ratio {fmt(m['negative_curvature_ratio@1'])} vs "
            f"{fmt(n['negative_curvature_ratio@1'])}, roughness {fmt(m['roughness'])} vs {fmt(n['roughness'])}, "
            f"loss rise at α = ±1 {fmt(m['sharpness@1'])} vs {fmt(n['sharpness@1'])}"
        )
        a, b = nets[r]["over_training"], nets[p]["over_training"]
        if a["steps"] == b["steps"]:
            gap = [None if x is None or y is None else x - y for x, y in zip(a["values"], b["values"])]
            moving[f"{r}-{p}"] = settling(a["steps"], gap, quantity="convex-fraction gap", threshold=0.0)
    notes = []
    if numbers["pairs"] and max(nets[r]["units"] for r, _ in numbers["pairs"]) < 27:  # fewer than 56 layers
        notes.append("The paper finds both 20-layer surfaces fairly convex; its gap opens at 56 and 110 layers")
    return judged(
        checks,
        found="; ".join(parts),
        notes=notes,
        settling=moving,
        missing="no residual net was measured against a plain net with as many units",
        trained=numbers.get("trained", ()),
    )


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    nets, training = numbers["nets"], trained_for(numbers["trained"])
    figures = [
        _line_figure(nets, numbers["line"], out, training),
        *_plane_figures(nets, numbers["grid"], out, training),
    ]
    return _table(nets), figures


def _line_figure(nets: dict[str, dict[str, Any]], line: Sequence[float], out: Path, training: str) -> Path:
    figure, axes = new_figure(12.5, 4.4, cols=2)
    for ax, key, label in zip(axes[0], ("loss", "error"), ("training loss", "training error (%)")):
        for name, net in nets.items():
            curves = np.array([[number(v) for v in s["line"][key]] for s in net["seeds"]])  # (seeds, points)
            style = "-" if net["kind"] == "residual" else "--"
            ax.plot(line, curves.mean(0), style, label=name)
            if len(curves) > 1:
                ax.fill_between(line, curves.min(0), curves.max(0), alpha=0.2)
        ax.set(xlabel="α (θ + α d1)", ylabel=label)
        ax.set_title(f"{label}: mean over seeds, band: range", fontsize=9)
        ax.grid(alpha=0.3)
    legend_outside(axes[0][1])
    titled(figure, "Training loss and error along one filter-normalised direction (Li et al. 2018)", training)
    return save_figure(figure, out, f"{NAME}-1d")


def _levels(nets: dict[str, dict[str, Any]]) -> np.ndarray:
    """Contour levels shared by every net: geometric from the lowest to the highest loss of the seed-0 planes."""
    values = np.concatenate([_plane(n).ravel() for n in nets.values()])
    values = values[np.isfinite(values) & (values > 0)]
    low, high = (values.min(), values.max()) if values.size else (1.0, 2.0)
    return np.geomspace(low, high if high > low else low * 1.01, 20)


def _plane(net: dict[str, Any]) -> np.ndarray:
    """The first seed's 2-D surface (rows β, columns α), NaN where the loss was not finite."""
    return np.array([[number(v) for v in row] for row in net["seeds"][0]["plane"]["loss"]], dtype=np.float64)


def _plane_figures(nets: dict[str, dict[str, Any]], grid: Sequence[float], out: Path, training: str) -> list[Path]:
    a, b = np.meshgrid(grid, grid)  # rows β, columns α, as the planes are stored
    levels = _levels(nets)
    figure, axes = new_figure(5.2 * len(nets), 4.6, cols=len(nets))
    flat = np.atleast_1d(axes).ravel() if len(nets) > 1 else [axes]
    for ax, (name, net) in zip(flat, nets.items()):
        contour = ax.contour(a, b, _plane(net), levels=levels)
        ax.clabel(contour, fontsize=6, fmt="%.2g")
        ax.plot([0], [0], "k+")
        ax.set(xlabel="α (d1)", ylabel="β (d2)", aspect="equal")
        ax.set_title(f"{name} (seed 0)", fontsize=9)
    titled(
        figure, "Contours of the training loss over two filter-normalised directions (Li et al. 2018, Fig. 5)", training
    )
    contours = save_figure(figure, out, f"{NAME}-contour")
    figure, axes = new_figure(5.2 * len(nets), 4.8, cols=len(nets))
    for ax in np.atleast_1d(axes).ravel() if len(nets) > 1 else [axes]:
        ax.remove()
    top = np.log10(levels[[0, -1]])
    for i, (name, net) in enumerate(nets.items()):
        ax = figure.add_subplot(1, len(nets), i + 1, projection="3d")
        z = np.log10(_plane(net))  # the corners reach 100x
        ax.plot_surface(a, b, z, cmap="viridis", vmin=top[0], vmax=top[1])
        ax.set(xlabel="α", ylabel="β", zlabel="log10 training loss", zlim=tuple(top))
        ax.set_title(f"{name} (seed 0)", fontsize=9)
    titled(figure, "The training-loss surface over two filter-normalised directions (log scale)", training)
    return [contours, save_figure(figure, out, f"{NAME}-surface")]


def _table(nets: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "| net | kind | centre loss | centre error (%) | PSD fraction r≤0.5 | PSD fraction r≤1 | "
            "neg. curvature ratio r≤1 | loss rise α=±0.5 | loss rise α=±1 | roughness |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, net in nets.items():
        m = net["measures"]
        rows.append(
            f"| {name} | {net['kind']} | {number(net['centre']['loss']):.4f} | {number(net['centre']['error']):.2f} | "
            f"{fmt(m['convex_fraction@0.5'])} | {fmt(m['convex_fraction@1'])} | "
            f"{fmt(m['negative_curvature_ratio@1'])} | {fmt(m['sharpness@0.5'])} | {fmt(m['sharpness@1'])} | "
            f"{fmt(m['roughness'])} |"
        )
    rows += over_training_rows(nets, "convex fraction r≤1 (coarse surface)", ".2f")
    return "\n".join(rows)
