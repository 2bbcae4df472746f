"""``resnets study scaling``: train deep nets without normalisation under residual scaling; who diverges or stalls.

Szegedy, Ioffe, Vanhoucke & Alemi 2016 ("Inception-v4, Inception-ResNet and the Impact of Residual Connections
on Learning", Sec. 3.3) found that very wide residual Inception nets "died" early in training unless each
residual was multiplied by 0.1-0.3 before the addition. Hanin & Rolnick 2018 ("How to Start Training: The
Effect of Initialization and Architecture", NeurIPS) show for ReLU ResNets without normalisation that each unit
adds its branch's second moment to the stream's, so the mean squared activation at the output grows with the
summed weights of the residual modules, and training fails to start unless that sum stays bounded in depth.
Here s multiplies the branch, so the sum is L s^2 over L units: L at s = 1, 1 at s = 1/sqrt(L). For the default
branch (a Linear layer with PyTorch's default init, variance 1/(3 fan-in), no norm) the mean square of the
pre-activation obeys E|a^{l-2} + s z^l|^2 = |a^{l-2}|^2 + s^2 (|a^{l-1}|^2 + 1) / 3 (the test checks it).

What is run: every (model, depth) net is trained WITHOUT normalisation (``norm="identity"``) at residual scales
1, 0.3, 0.1 and 1/sqrt(L) (L: the units with a shortcut), with the same seeds and recipe (the default recipe,
no warm-up, constant learning rate :data:`LR`: ``DEFAULT_RUNS["scaling"]`` in resnets.studies.plans), through
the one training engine, into OUT/runs (finished and diverged runs are reused). A run ends one of three ways:

- ``diverged``: the loss became non-finite; the engine names the step (``TrainingDivergedError.step``);
- ``stalled``: it finished, but its error on a fixed seeded subset of the training split (measured without
  augmentation, with the run's last weights) is within :data:`STALL_MARGIN` of chance, 1 - 1/classes
  (>= 80 % for 10 classes);
- ``trained``: otherwise, with its final train-subset and test errors.

Default: the residual MLP ``resmlp_identity_20`` (width 128, identity skips over two layers,
a^l = relu(s z^l + a^{l-2})) at 30, 100 and 200 layers, 200 steps, 2 seeds on Fashion-MNIST: 24 runs, 217 s
of CPU time on one thread (7.4 minutes' wall time on a shared, loaded 2-core machine). ``--model`` takes other models with a ``residual_scale`` and a ``norm`` option (e.g. resnet56,
the convolutional case, run as registered unless ``--depths`` is given); ``--budget paper`` trains 10 epochs
over 30-1000 layers (a GPU's work, not measured here; neither paper's own setting is reproduced).
At depth 100 the learning rate hardly matters for scale 1: it diverged within 3 steps at 0.1, 0.01 and 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError, TrainingDivergedError
from resnets.models import create_model, depth_options, get_model_entry
from resnets.studies.common import error_rate, fmt, number, spread, subset_batches
from resnets.studies.contract import INTS, Context, InstrumentOptions, models_option, option
from resnets.studies.figures import new_figure, run_length, save_figure, titled
from resnets.studies.plans import RunSpec, default_runs
from resnets.studies.trained import open_trained, read_step_log, run_path, train_run
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "scaling"
CLAIM = (
    "Without normalisation, deep residual nets fail at the start of training at residual scale 1, and train "
    "once each residual is scaled so that the residual modules' summed weights stay bounded with depth, e.g. "
    "1/sqrt(L) (Hanin & Rolnick 2018, 'How to Start Training: The Effect of Initialization and Architecture': "
    "for ResNets the exploding or vanishing mean activation length is avoided 'by correctly scaling the residual "
    "modules'), or by a constant 0.1-0.3 as Szegedy, Ioffe, Vanhoucke & Alemi 2016 ('Inception-v4, "
    "Inception-ResNet and the Impact of Residual Connections on Learning', Sec. 3.3) scaled the residuals of "
    "Inception-ResNets that otherwise 'died' (those nets had BN on their non-residual layers, and died after tens "
    "of thousands of iterations)."
)
DEFAULT_MODEL = "resmlp_identity_20"
INV_SQRT = "1/sqrt(L)"
SCALES: tuple[float | str, ...] = (1.0, 0.3, 0.1, INV_SQRT)
LR = 0.1  # per step: He et al. 2015's rate, high enough to expose an exploding start
STALL_MARGIN = 0.10  # a finished run is stalled when its train error is within 10 points of 1 - 1/classes
SUBSET_SEED = 0  # the subset is the same for every run
FINAL_WINDOW = 10  # steps averaged for the final batch loss
OUTCOMES = ("diverged", "stalled", "trained")


THRESHOLDS = {
    "scale_one_fails": Threshold(
        0.5,
        above=False,
        unit="",
        paper="Hanin & Rolnick (abstract): in ResNets the first failure mode, a mean activation length that "
        "explodes or vanishes with depth, is avoided only by correctly scaling the residual modules; no rate "
        "of failure is given. Szegedy et al.: with more than 1000 filters the residual Inception variants "
        "'died' early in training, the last layer before the average pooling giving only zeros after a few "
        "tens of thousands of iterations, which neither a lower learning rate nor an extra BN prevented",
        source="Hanin & Rolnick 2018, abstract and Sec. 4; Szegedy, Ioffe, Vanhoucke & Alemi 2016, Sec. 3.3",
        why="our line: the share of the unnormalised nets that trained at residual scale 1, per training seed, "
        "below one half",
    ),
    "scaled_train": Threshold(
        0.5,
        above=True,
        unit="",
        paper="'scaling down the residuals before adding them to the previous layer activation seemed to "
        "stabilize the training', with factors 'between 0.1 and 0.3' (Szegedy et al. 2016, Sec. 3.3); a ReLU "
        "ResNet starts training when its residual modules are correctly scaled (Hanin & Rolnick 2018, abstract); "
        "by the variance sum the second moment grows as prod (1 + s^2), bounded in depth at 1/sqrt(L) per unit, "
        "whose summed squares are 1",
        source="Szegedy et al. 2016, Sec. 3.3; Hanin & Rolnick 2018, Sec. 4",
        why="our line: the share of the down-scaled nets (0.3, 0.1, 1/sqrt(L)) that trained, per training "
        "seed, above one half",
    ),
}


@dataclass(frozen=True)
class Options(InstrumentOptions):
    models: tuple[str, ...] = models_option(
        "a model with a residual_scale and a norm option to train (e.g. resnet56, run as registered "
        "unless --depths is given)"
    )
    depths: tuple[int, ...] = option((), "depths of the models in weighted layers", **INTS)
    steps: int | None = option(None, "optimiser steps per run")
    seeds: int | None = option(None, "training seeds per model, depth and scale")
    samples: int = option(1000, "training images in the fixed subset that decides stalled / trained")


@dataclass(frozen=True)
class Net:
    """One model at one depth: its name, the depth asked (None: as registered), its units with a shortcut (L)
    and the options that build it at that depth (besides ``norm`` and ``residual_scale``)."""

    model: str
    depth: int | None
    units: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.model if self.depth is None else f"{self.model} @ {self.depth}"


def scale_value(scale: float | str, units: int) -> float:
    """The number a scale stands for: 1/sqrt(L) for :data:`INV_SQRT`, else the scale itself."""
    return 1.0 / math.sqrt(units) if scale == INV_SQRT else float(scale)


def scale_label(scale: float | str) -> str:
    return scale if isinstance(scale, str) else f"{scale:g}"


def chance_error(classes: int) -> float:
    """Error of a constant guess on balanced classes, as a fraction."""
    return 1.0 - 1.0 / classes


def finished_outcome(train_error: float, classes: int) -> str:
    """``stalled`` within :data:`STALL_MARGIN` of chance (or unmeasurable), else ``trained``; errors as fractions."""
    if not math.isfinite(train_error) or train_error >= chance_error(classes) - STALL_MARGIN:
        return "stalled"
    return "trained"


def build_net(name: str, depth: int | None) -> Net:
    """The :class:`Net` of ``name`` at ``depth`` (None: as registered), built once to count its residual units."""
    options = {} if depth is None else depth_options(name, depth)
    model = create_model(name, norm="identity", **options)
    units = sum(info.has_shortcut for info in model.residual_blocks())
    if units == 0:
        raise ConfigError(f"model {name!r} has no unit with a shortcut, so no residual to scale; use a residual net")
    return Net(name, depth, units, options)


def scaling_label(net: Net, scale: float | str, lr: float = LR) -> str:
    """The name of a scaling run in OUT/runs (before its data, seed and steps)."""
    depth = "" if net.depth is None else f"-d{net.depth}"
    tag = "inv_sqrt_L" if scale == INV_SQRT else f"{scale:g}"
    return f"scaling-{net.model}{depth}-x{tag}-lr{lr:g}"


def plan(options: Options, context: Context) -> list[Net]:
    """The nets to train: each ``--model`` (default: the residual MLP) at each depth, built once to check them."""
    row = default_runs(NAME, context.budget)[0]
    nets = []
    for name in options.models or row.models:
        missing = [k for k in ("norm", "residual_scale") if k not in get_model_entry(name).options()]
        if missing:
            raise ConfigError(
                f"model {name!r} has no {' or '.join(missing)} option to train it unnormalised under residual "
                f"scaling; use a residual MLP ({DEFAULT_MODEL}) or a CIFAR ResNet (resnet20, resnet56, ...)"
            )
        depths = options.depths or (row.depths if name in row.models else (None,))
        nets += [build_net(name, depth) for depth in depths]
    return nets


def scaled_spec(context: Context, net: Net, scale: float | str, seed: int, steps: int, lr: float = LR) -> RunSpec:
    """The run of ``net`` without normalisation at residual ``scale`` with ``seed`` (its label names all three)."""
    row = default_runs(NAME, context.budget)[0]
    return RunSpec(
        net.model,
        scaling_label(net, scale, lr),
        steps,
        seed,
        row.recipe,
        0,
        row.data,
        {**net.options, "norm": "identity", "residual_scale": scale_value(scale, net.units)},
        {**row.changes, "lr": lr},
    )


def planned_runs(options: Options, context: Context) -> list[RunSpec]:
    """Every run of the study: each net at every scale and seed."""
    row = default_runs(NAME, context.budget)[0]
    steps, seeds = options.steps or row.steps, options.seeds or row.seeds
    nets = plan(options, context)
    return [scaled_spec(context, net, scale, seed, steps) for net in nets for scale in SCALES for seed in range(seeds)]


def train_scaled(
    context: Context, net: Net, scale: float | str, seed: int, steps: int, lr: float = LR
) -> tuple[Path, int | None]:
    """Train one run (or reuse the finished or diverged one in OUT/runs); returns its path and divergence step."""
    spec = scaled_spec(context, net, scale, seed, steps, lr)
    try:
        return train_run(context, spec), None
    except TrainingDivergedError as error:
        return run_path(context, spec), error.step


def measure_run(path: Path, diverged_at: int | None, samples: int, context: Context | None = None) -> dict[str, Any]:
    """Outcome, errors (%) and loss curve of one run, measured on the study's device and in its precision
    (``context``; None: the defaults, the CPU in fp32)."""
    rows = read_step_log(path)
    losses = [row["loss"] for row in rows]
    result: dict[str, Any] = {
        "run": str(path),
        "diverged_at": diverged_at,
        "initial_loss": losses[0] if losses else math.nan,
        "final_loss": sum(losses[-FINAL_WINDOW:]) / len(losses[-FINAL_WINDOW:]) if losses else math.nan,
        "curve": {"step": [row["step"] for row in rows], "loss": losses},
    }
    if diverged_at is not None:
        return {"outcome": "diverged", "train_error": math.nan, "test_error": math.nan, **result}
    trained = open_trained(context or Context(), path, path.name)
    run = trained.run
    train_error = error_rate(run.model, subset_batches(run, samples, SUBSET_SEED, split="train"), run.precision)
    return {
        "outcome": finished_outcome(train_error, run.record.num_classes),
        "train_error": 100.0 * train_error,
        "test_error": trained.test_error,
        "length": run_length(trained.describe()),
        **result,
    }


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Train every net at every scale and seed, classify each run, and count the outcomes."""
    row = default_runs(NAME, context.budget)[0]
    nets = plan(options, context)
    steps = options.steps or row.steps
    seeds = options.seeds or row.seeds
    work = [(net, scale, seed) for net in nets for scale in SCALES for seed in range(seeds)]
    runs = []
    for net, scale, seed in context.progress(work, NAME):
        path, diverged_at = train_scaled(context, net, scale, seed, steps)
        measured = measure_run(path, diverged_at, options.samples, context)
        runs.append({"net": net.label, "scale": scale_label(scale), "seed": seed, **measured})
    return {
        "settings": {
            "what_was_run": "each net trained from scratch without normalisation (norm='identity') at every "
            "residual scale and seed, with the same recipe; outcome from the engine's divergence error, else from "
            "the error on a fixed training subset",
            "nets": [asdict(n) for n in nets],
            "scales": [scale_label(s) for s in SCALES],
            "units": "L = residual units with a shortcut; 1/sqrt(L) is computed per net",
            "norm": "identity (no normalisation anywhere)",
            "recipe": row.recipe + " with " + ", ".join(f"{k}={v}" for k, v in row.changes.items()),
            "steps": steps,
            "seeds": seeds,
            "train_subset": f"{options.samples} training images drawn by seed {SUBSET_SEED}, unaugmented, last weights",
            "stalled_when": f"train-subset error >= 1 - 1/classes - {STALL_MARGIN:g} (80% for 10 classes)",
            "loss_curve": "batch loss per step from the run's steps.csv",
        },
        "steps": steps,
        "seeds": seeds,
        "nets": [{**asdict(n), "label": n.label} for n in nets],
        "cells": summarise(runs, nets),
        "runs": runs,
    }


def _trained_share(runs: Sequence[dict[str, Any]], seeds: int, scales: Sequence[str]) -> tuple[float | None, ...]:
    """Per training seed: the share of the runs at ``scales`` that trained."""
    shares = []
    for seed in range(seeds):
        mine = [r for r in runs if r["seed"] == seed and r["scale"] in scales]
        shares.append(sum(r["outcome"] == "trained" for r in mine) / len(mine) if mine else None)
    return tuple(shares)


def _loss_points(runs: Sequence[dict[str, Any]], scale: str, points: int = 5) -> tuple[list[int], list[float]]:
    """The mean batch loss of the runs at ``scale`` that did not diverge, at ``points`` evenly spaced steps."""
    curves = [r["curve"] for r in runs if r["scale"] == scale and r["diverged_at"] is None and r["curve"]["loss"]]
    if not curves:
        return [], []
    length = min(len(c["loss"]) for c in curves)
    at = sorted({round(i * (length - 1) / (points - 1)) for i in range(points)})
    return [curves[0]["step"][i] for i in at], [sum(number(c["loss"][i]) for c in curves) / len(curves) for i in at]


def judge(numbers: dict[str, Any]) -> Verdict:
    runs, cells, seeds = numbers["runs"], numbers["cells"], numbers["seeds"]
    labels = [scale_label(s) for s in SCALES]
    scaled = [s for s in labels if s != "1"]

    def describe(scale: str) -> str:
        mine = [c for c in cells if c["scale"] == scale]
        n = {o: sum(c["counts"][o] for c in mine) for o in OUTCOMES}
        seen = sorted(step for c in mine for step in c["diverged_at"])
        text = f"scale {scale}: {n['trained']}/{sum(n.values())} trained, {n['diverged']} diverged"
        if seen:
            text += f" (at step {seen[0]}" + (f"-{seen[-1]})" if seen[-1] != seen[0] else ")")
        return text + f", {n['stalled']} stalled"

    checks = [
        Check(
            "scale_one_fails",
            "share of the nets that trained at scale 1",
            _trained_share(runs, seeds, ["1"]),
            THRESHOLDS["scale_one_fails"],
        ),
        Check(
            "scaled_train",
            "share of the down-scaled nets that trained",
            _trained_share(runs, seeds, scaled),
            THRESHOLDS["scaled_train"],
        ),
    ]
    found = f"{numbers['steps']} steps at lr {LR:g}: " + "; ".join(describe(s) for s in labels)
    moving = {}
    for scale in scaled:
        steps, values = _loss_points(runs, scale)
        moving[f"scale {scale}"] = settling(steps, values, quantity="mean batch loss")
    if not any(c["counts"]["trained"] for c in cells):  # nothing trained: too short to tell scale from length
        return judged([], found=found, missing="no run trained at any scale, too short to tell", settling=moving)
    return judged(checks, found=found, settling=moving)


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    nets = [Net(n["model"], n["depth"], n["units"], n["options"]) for n in numbers["nets"]]
    return _table(numbers["cells"]), _figures(numbers, nets, out)


def summarise(runs: Sequence[dict[str, Any]], nets: Sequence[Net]) -> list[dict[str, Any]]:
    """Per net and scale: outcome counts over seeds, divergence steps, error and loss spreads."""
    cells = []
    for net in nets:
        for scale in SCALES:
            mine = [r for r in runs if r["net"] == net.label and r["scale"] == scale_label(scale)]
            cells.append(
                {
                    "net": net.label,
                    "model": net.model,
                    "depth": net.depth,
                    "units": net.units,
                    "scale": scale_label(scale),
                    "scale_value": scale_value(scale, net.units),
                    "scale_sum": net.units * scale_value(scale, net.units) ** 2,  # sum over units of s^2
                    "counts": {o: sum(r["outcome"] == o for r in mine) for o in OUTCOMES},
                    "diverged_at": [r["diverged_at"] for r in mine if r["diverged_at"] is not None],
                    "train_error": spread(r["train_error"] for r in mine),
                    "test_error": spread(r["test_error"] for r in mine),
                    "initial_loss": spread(r["initial_loss"] for r in mine),
                }
            )
    return cells


def _figures(numbers: dict[str, Any], nets: Sequence[Net], out: Path) -> list[Path]:
    runs, cells = numbers["runs"], numbers["cells"]
    training = f"unnormalised nets trained {numbers['steps']} steps at lr {LR:g}, {numbers['seeds']} seeds"
    colors = {scale_label(s): f"C{i}" for i, s in enumerate(SCALES)}
    figure, axes = new_figure(4.4 * len(nets), 4.0, cols=len(nets))
    axes = [axes] if len(nets) == 1 else list(axes[0])
    for ax, net in zip(axes, nets):
        for r in (r for r in runs if r["net"] == net.label):
            steps, losses = r["curve"]["step"], r["curve"]["loss"]
            kept = [(s, v) for s, v in zip(steps, losses) if v is not None and math.isfinite(v) and v > 0]
            label = r["scale"] if r["seed"] == 0 else None
            if kept:
                ax.plot(*zip(*kept), color=colors[r["scale"]], lw=1, alpha=0.8, label=label)
            if r["diverged_at"] is not None:
                ax.plot(r["diverged_at"], kept[-1][1] if kept else 1.0, "x", color=colors[r["scale"]], ms=9)
        ax.set(xlabel="step", ylabel="batch loss", yscale="log")
        ax.set_title(f"{net.label} (L = {net.units})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(title="residual scale (x: diverged)", fontsize=8)
    titled(figure, "Batch loss of unnormalised nets under residual scaling", training)
    paths = [save_figure(figure, out, f"{NAME}-loss")]

    figure, ax = new_figure(2.6 + 1.6 * len(nets), 1.8 + 0.6 * len(SCALES))
    grid = [[math.nan] * len(nets) for _ in SCALES]
    for c in cells:
        i = [scale_label(s) for s in SCALES].index(c["scale"])
        j = [n.label for n in nets].index(c["net"])
        total = sum(c["counts"].values())
        grid[i][j] = c["counts"]["trained"] / total if total else math.nan
        text = " ".join(f"{o[0].upper()}{c['counts'][o]}" for o in OUTCOMES if c["counts"][o])
        ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.imshow(grid, cmap="RdYlGn", vmin=-0.5, vmax=1.5, aspect="auto")  # pale ends, so the counts stay legible
    ax.set_xticks(range(len(nets)), [f"{n.label}\nL = {n.units}" for n in nets], fontsize=7)
    ax.set_yticks(range(len(SCALES)), [f"s = {scale_label(s)}" for s in SCALES])
    titled(figure, "Outcomes over seeds (D diverged, S stalled, T trained)", training)
    paths.append(save_figure(figure, out, f"{NAME}-outcomes"))
    return paths


def _table(cells: Sequence[dict[str, Any]]) -> str:
    header = (
        "net | L | scale | L·s² | diverged | stalled | trained | diverged at step | train error (%) | test error (%)"
    )
    rows = [f"| {header} | first loss |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        n = c["counts"]
        errors = [fmt(c[k]) if c[k]["n"] else "-" for k in ("train_error", "test_error")]
        scale = f"{c['scale']} = {c['scale_value']:.3g}" if c["scale"] == INV_SQRT else c["scale"]
        rows.append(
            f"| {c['net']} | {c['units']} | {scale} | {c['scale_sum']:.3g} | "
            f"{n['diverged']} | {n['stalled']} | {n['trained']} | "
            f"{', '.join(map(str, c['diverged_at'])) or '-'} | {errors[0]} | {errors[1]} | "
            f"{fmt(c['initial_loss'])} |"
        )
    return "\n".join(rows)
