"""Loss landscapes along filter-normalised directions: residual nets against their plain twins (Li et al. 2018).

Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural Nets", NeurIPS, Sec. 5
and 6, Fig. 5 and 7) plot the training loss around a trained net's weights θ along random filter-normalised
directions (see :mod:`resnets.studies.directions`): 1-D curves f(θ + α d) and 2-D surfaces
f(θ + α d1 + β d2). Skip connections keep the surface smooth and nearly convex as depth grows, while plain nets
turn chaotic; at 20 layers both are fairly convex, the gap shows at 56 and 110 layers.

Here the loss and top-1 error are measured by the one evaluation loop (``resnets.metrics.evaluate``, eval-mode
BN with the run's running statistics, the run's precision) on a fixed seeded subset of the training split fed
without augmentation, so the centre is exactly the run's own loss on those images. Each seed draws another pair
of directions (the subset stays). The paper's tool spreads the grid over MPI ranks and GPUs; this one moves the
weights of one model in place and reuses the same pre-made batches for every point.

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
from typing import Any

import numpy as np
import torch

from resnets.device import Precision
from resnets.errors import ConfigError
from resnets.metrics import evaluate
from resnets.runs import Run
from resnets.studies.common import (
    BN_EVAL_MODE,
    Batches,
    StudyOptions,
    StudyResult,
    fmt,
    new_figure,
    progress,
    run_label,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.directions import Direction, displaced, random_direction
from resnets.studies.trained import DEFAULT_DATA, DEFAULT_STEPS, PLAIN, RESIDUAL, trained_runs

NAME = "landscape"
CLAIM = (
    "Skip connections keep the training-loss landscape along filter-normalised random directions smooth and "
    "nearly convex, while plain nets' landscapes turn chaotic and non-convex as depth grows; at 20 layers both "
    "are fairly convex (Li, Xu, Taylor, Studer & Goldstein 2018, 'Visualizing the Loss Landscape of Neural Nets', "
    "NeurIPS, Sec. 5-6, Fig. 5 and 7)."
)
DEFAULT_SAMPLES = 1000  # training images per evaluation: about 0.9 s of resnet20 on 2 CPU cores
DEFAULT_GRID = 9  # points per axis of the 2-D surface; 9 divides the 1-D line's spacing, so its β = 0 row is reused
DEFAULT_SEEDS = 2  # direction pairs; with the defaults about 225 evaluations per net, ~7 minutes for the pair
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
    quiet: bool = True,
) -> dict[str, Any]:
    """Loss and top-1 error (%) along ``line`` (θ + α d1) and on ``grid`` x ``grid`` (θ + α d1 + β d2).

    The plane's rows run over β and its columns over α. Points shared by the line and the plane are measured
    once; ``centre`` (loss, error) at θ may be given when already measured. θ is restored bit for bit.
    """
    values: dict[tuple[float, float], tuple[float, float]] = {} if centre is None else {(0.0, 0.0): centre}
    wanted = [(a, 0.0) for a in line] + [(a, b) for b in grid for a in grid]
    todo = [p for p in dict.fromkeys(wanted) if p not in values]
    with displaced(model, along) as move:
        for point in progress(todo, desc=NAME, quiet=quiet):
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


def measure_run(run: Run, options: StudyOptions, line: Sequence[float], grid: Sequence[float]) -> dict[str, Any]:
    """The landscapes of one run for every seed, with its kind, unit count and measures."""
    batches = training_subset(run, options.pick("samples", DEFAULT_SAMPLES))
    blocks = run.model.residual_blocks()
    seeded, centre = [], None
    for seed in seeds(options, default=DEFAULT_SEEDS):
        along = directions(run.model, seed)
        measured = surfaces(
            run.model, batches, run.record.num_classes, along, line, grid,
            precision=run.precision, centre=centre, quiet=options.quiet,
        )  # fmt: skip
        centre = (measured["line"]["loss"][line.index(0.0)], measured["line"]["error"][line.index(0.0)])
        seeded.append({"seed": seed, **measured})
    return {
        "model": run.record.model,
        "kind": "residual" if any(info.has_shortcut for info in blocks) else "plain",
        "units": len(blocks),
        "run": str(run.path or run.checkpoint),
        "checkpoint": run.checkpoint.stem,
        "centre": {"loss": centre[0], "error": centre[1]},
        "evaluations": sum(s["evaluations"] for s in seeded),
        "measures": measures(seeded, line, grid),
        "seeds": seeded,
    }


def _pairs(nets: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Each residual net against each plain net with as many units (twins)."""
    return [
        (r, p)
        for r in nets
        for p in nets
        if nets[r]["kind"] == "residual" and nets[p]["kind"] == "plain" and nets[r]["units"] == nets[p]["units"]
    ]


def _more_convex(res: dict[str, Any], plain: dict[str, Any]) -> bool | None:
    """Residual more convex than plain within r = 1: a higher convex fraction, on a tie a lower ratio."""
    for key, sign in (("convex_fraction@1", 1), ("negative_curvature_ratio@1", -1)):
        a, b = res["measures"][key]["mean"], plain["measures"][key]["mean"]
        if math.isfinite(a) and math.isfinite(b) and a != b:
            return sign * (a - b) > 0
    return None


def _verdict(nets: dict[str, dict[str, Any]], steps: int | None) -> tuple[str, bool | None]:
    """Residual against plain twin on convexity (the decision), with smoothness and sharpness reported alongside;
    ``steps`` is the length of the default runs (None for --run), which are not converged minima."""
    parts, checks = [], []
    for r, p in _pairs(nets):
        m, n = nets[r]["measures"], nets[p]["measures"]
        checks.append(_more_convex(nets[r], nets[p]))
        word = {True: "more convex than", False: "less convex than", None: "as convex as"}[checks[-1]]
        smoother = m["roughness"]["mean"] <= n["roughness"]["mean"]
        parts.append(
            f"{r}'s surface is {word} {p}'s (PSD fraction within r=1 {m['convex_fraction@1']['mean']:.2f} vs "
            f"{n['convex_fraction@1']['mean']:.2f}, negative-curvature ratio {m['negative_curvature_ratio@1']['mean']:.3f}"
            f" vs {n['negative_curvature_ratio@1']['mean']:.3f}), {'smoother' if smoother else 'rougher'} along the "
            f"1-D line (roughness {m['roughness']['mean']:.3f} vs {n['roughness']['mean']:.3f}) and rises "
            f"{m['sharpness@1']['mean']:.3g} vs {n['sharpness@1']['mean']:.3g} at α = ±1"
        )
    if not parts:
        return "Undecided: no residual net was measured against a plain net with as many units.", None
    supported = True if all(checks) else False if any(c is False for c in checks) else None
    head = {True: "Supported", False: "Not supported", None: "Undecided"}[supported]
    shallow = max(nets[r]["units"] for r, _ in _pairs(nets)) < 27  # fewer than 56 layers (27 basic blocks)
    note = (
        " The paper finds both 20-layer surfaces fairly convex; its gap opens at 56 and 110 layers." if shallow else ""
    )
    if steps is not None:
        note += f" Measured around short {steps}-step runs, not converged minima."
    return f"{head}: {'; '.join(parts)}.{note}", supported


def _line_figure(nets: dict[str, dict[str, Any]], line: Sequence[float], out: str) -> Any:
    figure, axes = new_figure(11, 4.2, cols=2)
    for ax, key, label in zip(axes[0], ("loss", "error"), ("training loss", "training error (%)")):
        for name, net in nets.items():
            curves = np.array([s["line"][key] for s in net["seeds"]], dtype=np.float64)  # (seeds, points)
            style = "-" if net["kind"] == "residual" else "--"
            ax.plot(line, curves.mean(0), style, label=name)
            if len(curves) > 1:
                ax.fill_between(line, curves.min(0), curves.max(0), alpha=0.2)
        ax.set(xlabel="α (θ + α d1)", ylabel=label, title=f"{label}: mean over seeds, band: range")
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(figure, out, f"{NAME}-1d")


def _levels(nets: dict[str, dict[str, Any]]) -> np.ndarray:
    """Contour levels shared by every net: geometric from the lowest to the highest loss of the seed-0 planes."""
    values = np.concatenate(
        [np.asarray(n["seeds"][0]["plane"]["loss"], dtype=np.float64).ravel() for n in nets.values()]
    )
    values = values[np.isfinite(values) & (values > 0)]
    low, high = (values.min(), values.max()) if values.size else (1.0, 2.0)
    return np.geomspace(low, high if high > low else low * 1.01, 20)


def _plane_figures(nets: dict[str, dict[str, Any]], grid: Sequence[float], out: str) -> list[Any]:
    a, b = np.meshgrid(grid, grid)  # rows β, columns α, as the planes are stored
    levels = _levels(nets)
    figure, axes = new_figure(5.2 * len(nets), 4.6, cols=len(nets))
    flat = np.atleast_1d(axes).ravel() if len(nets) > 1 else [axes]
    for ax, (name, net) in zip(flat, nets.items()):
        contour = ax.contour(a, b, np.asarray(net["seeds"][0]["plane"]["loss"], dtype=np.float64), levels=levels)
        ax.clabel(contour, fontsize=6, fmt="%.2g")
        ax.plot([0], [0], "k+")
        ax.set(title=f"{name} (seed 0)", xlabel="α (d1)", ylabel="β (d2)", aspect="equal")
    contours = save_figure(figure, out, f"{NAME}-contour")
    figure, axes = new_figure(5.2 * len(nets), 4.8, cols=len(nets))
    for ax in np.atleast_1d(axes).ravel() if len(nets) > 1 else [axes]:
        ax.remove()
    top = np.log10(levels[[0, -1]])
    for i, (name, net) in enumerate(nets.items()):
        ax = figure.add_subplot(1, len(nets), i + 1, projection="3d")
        z = np.log10(np.asarray(net["seeds"][0]["plane"]["loss"], dtype=np.float64))  # the corners reach 100x
        ax.plot_surface(a, b, z, cmap="viridis", vmin=top[0], vmax=top[1])
        ax.set(title=f"{name} (seed 0)", xlabel="α", ylabel="β", zlabel="log10 training loss", zlim=tuple(top))
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
            f"| {name} | {net['kind']} | {net['centre']['loss']:.4f} | {net['centre']['error']:.2f} | "
            f"{fmt(m['convex_fraction@0.5'])} | {fmt(m['convex_fraction@1'])} | "
            f"{fmt(m['negative_curvature_ratio@1'])} | {fmt(m['sharpness@0.5'])} | {fmt(m['sharpness@1'])} | "
            f"{fmt(m['roughness'])} |"
        )
    return "\n".join(rows)


def run(options: StudyOptions) -> StudyResult:
    """Landscapes of trained runs (default: short resnet20 and plain20 runs) along seeded random directions."""
    grid_points = options.pick("grid", DEFAULT_GRID)
    if grid_points < 3:
        raise ConfigError(f"--grid {grid_points} is too coarse: the curvature measures need at least 3 points per axis")
    line, grid = coordinates(LINE_POINTS), coordinates(grid_points)
    steps = options.pick("steps", DEFAULT_STEPS)
    runs = trained_runs(options, list(options.models) or [RESIDUAL, PLAIN], steps=steps)
    taken: set[str] = set()
    nets = {run_label(r, taken): measure_run(r, options, line, grid) for r in runs}
    verdict, supported = _verdict(nets, None if options.runs else steps)
    figures = [_line_figure(nets, line, options.out), *_plane_figures(nets, grid, options.out)]
    settings = {
        "measured_on": "trained runs, eval mode, the run's weights and precision",
        "runs": [net["run"] for net in nets.values()],
        "checkpoints": [net["checkpoint"] for net in nets.values()],
        "models": [net["model"] for net in nets.values()],
        "default_run_steps": None if options.runs else steps,
        "data": "each run's recorded data" if options.runs else options.data or DEFAULT_DATA,
        "split": "train, without augmentation (the paper plots training loss)",
        "samples": options.pick("samples", DEFAULT_SAMPLES),
        "subset": f"torch.randperm seeded with {SUBSET_SEED}, the same for every seed",
        "seeds": len(seeds(options, default=DEFAULT_SEEDS)),
        "directions": "Gaussian (torch.Generator seeded by the seed: d1 then d2), filter-normalised to θ's filters; "
        "zero in biases and BN/LN parameters (1-D), buffers untouched",
        "line": f"{LINE_POINTS} points of α in [-1, 1] along d1",
        "grid": f"{grid_points} x {grid_points} points of (α, β) in [-1, 1]^2",
        "error": "top-1 error in percent",
        "convexity": "interior grid points within radius r; PSD: λmin >= 0 of the central-difference Hessian; "
        "ratio: max(-λmin, 0) / max(|λmin|, |λmax|)",
        "bn": BN_EVAL_MODE,
        "device": options.device,
    }
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings=settings,
        numbers={"line": line, "grid": grid, "nets": nets, "pairs": [list(p) for p in _pairs(nets)]},
        table=_table(nets),
        figures=figures,
    )
