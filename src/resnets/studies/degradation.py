"""``resnets study degradation``: plain nets train worse as they get deeper, residual nets do not (He et al. 2015).

He, Zhang, Ren & Sun 2015 ("Deep Residual Learning for Image Recognition", Sec. 4.2, Fig. 6 and Table 6) train
plain nets and their residual twins of 20, 32, 44 and 56 layers on CIFAR-10 with one recipe: the deeper plain
nets end with a *higher training error* (the degradation problem, not overfitting), while the deeper residual
nets end lower. Here each twin is trained at each depth with the same recipe, data and seeds, through the one
training engine, and:

- the training error curve is the per-step batch error of the run's ``steps.csv`` (with augmentation, as the
  network saw it), smoothed over a window (thin lines, as in Fig. 6);
- the test error curve is the error of the run's weight snapshots on a fixed test subset (bold lines), ending at
  the run's own error on the whole test split; runs with per-epoch rows (``--budget paper``) use those;
- the final training error is the mean batch error over the last tenth of the steps, the final test error the
  run's own on the whole test split; mean and spread over seeds.

Twins share every setting except the shortcut: the study checks it through the runs' records and model configs
before it compares them. The runs are those of ``DEFAULT_RUNS["degradation"]`` (resnets.studies.plans): on
the cpu budget the speedrun twins at 20 and 56 layers, the study-fm recipe to its end, 2 seeds; ``--budget
paper`` runs the paper's schedule (he2015-cifar: 64k iterations, lr /10 at 32k and 48k, a 45k/5k
train/validation split) on CIFAR-10 at 20, 32, 44, 56 and 110 layers, for a GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.models import create_model
from resnets.runs import Run
from resnets.studies.common import error_rate, number, spread, subset_batches
from resnets.studies.contract import INTS, Context, InstrumentOptions, models_option, option
from resnets.studies.figures import legend_outside, new_figure, run_length, save_figure, titled
from resnets.studies.plans import DefaultRuns, RunSpec, default_runs
from resnets.studies.reorder import is_plain
from resnets.studies.trained import TrainedRun, open_trained, train_run
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "degradation"
CLAIM = (
    "Trained with one recipe, deeper plain networks end with a higher training error than shallower ones (the "
    "degradation problem: an optimisation difficulty, not overfitting), while deeper residual networks end with a "
    "lower one (He, Zhang, Ren & Sun 2015, 'Deep Residual Learning for Image Recognition', Sec. 4.2, Fig. 6, "
    "Table 6: plain-56 trains worse than plain-20 on CIFAR-10; ResNet-56 better than ResNet-20)."
)
HE = "He, Zhang, Ren & Sun 2015"
TAIL = 0.1  # the final training error averages the batch errors of this last share of the steps
RESIDUAL_TOLERANCE = 1.0  # points of training error within which a deeper residual net counts as "no worse"
THRESHOLDS = {
    "plain_degrades": Threshold(
        0.0,
        above=True,
        unit="points",
        paper="'The deep plain nets suffer from increased depth, and exhibit higher training error when going "
        "deeper'; read off Fig. 6 (left): at 64k iterations plain-56's training error is about 6% and "
        "plain-20's about 1% (test error about 13% against 10%), plain-56 above plain-20 all along; Table 6 "
        "lists no plain net",
        source=f"{HE}, Sec. 4.2, Fig. 6 (left)",
        why="our line: final training error of the deepest plain net minus the shallowest's above 0, per training seed",
    ),
    "residual_no_worse": Threshold(
        RESIDUAL_TOLERANCE,
        above=False,
        unit="points",
        paper="the ResNets 'manage to overcome the optimization difficulty and demonstrate accuracy gains when "
        "the depth increases'; Table 6 test error: ResNet-20 8.75%, 32 7.51%, 44 7.17%, 56 6.97%, 110 6.43%; "
        "read off Fig. 6 (middle): at 64k iterations ResNet-20's training error is about 0.5-1%, the deeper "
        "ResNets' nearer 0",
        source=f"{HE}, Sec. 4.2, Fig. 6 (middle), Table 6",
        why="our line: final training error of the deepest residual net minus the shallowest's below 1 point, "
        "'no worse' on a short run (the paper's deeper nets end lower, by under 1 point of training error)",
    ),
}


@dataclass(frozen=True)
class Options(InstrumentOptions):
    models: tuple[str, ...] = models_option("the twins: one plain and one residual model, in either order")
    depths: tuple[int, ...] = option((), "depths of the twins in weighted layers", **INTS)
    steps: int | None = option(None, "optimiser steps per run")
    seeds: int | None = option(None, "training seeds per twin and depth")
    samples: int = option(2000, "test images per curve point at the snapshots (the last: the whole test split)")


def twins(names: Sequence[str]) -> tuple[str, str]:
    """(plain, residual) model names from two names in either order."""
    if len(names) != 2:
        raise ConfigError(f"degradation compares two twins, a plain and a residual model; got --model {tuple(names)}")
    plain = [name for name in names if is_plain(create_model(name).residual_blocks())]
    if len(plain) != 1:
        raise ConfigError(f"give one plain model (no shortcuts) and one residual twin; got {', '.join(names)}")
    return plain[0], next(name for name in names if name != plain[0])


#: The config fields that are the shortcut itself: a CIFAR ResNet's ``shortcut`` option, a speedrun net's
#: ``residual`` switch (its plain twin is the same net with it off).
SHORTCUT_FIELDS = ("shortcut", "residual")


def check_twins(plain: Run, residual: Run) -> None:
    """Refuse runs that differ in anything but the shortcut: their model configs and training records."""
    a, b = dataclasses.asdict(plain.model.config), dataclasses.asdict(residual.model.config)
    differ = sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key) and key not in SHORTCUT_FIELDS)
    record_a, record_b = plain.record.to_dict(), residual.record.to_dict()
    for record in (record_a, record_b):
        record.pop("model"), record.pop("model_options")
        record["train"] = {k: v for k, v in record["train"].items() if k not in ("model", "model_options", "out")}
    differ += sorted(key for key in record_a if record_a[key] != record_b.get(key))
    if differ:
        raise ConfigError(
            f"{plain.record.model} and {residual.record.model} are not twins: they differ in {', '.join(differ)} "
            "besides the shortcut"
        )


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """The trailing mean of each value over the last ``window`` values (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def final_train_error(errors: Sequence[float], tail: float = TAIL) -> float:
    """Mean batch error (%) over the last ``tail`` share of the steps (at least one step)."""
    count = max(1, round(len(errors) * tail))
    return sum(errors[-count:]) / count if errors else math.nan


def measure_run(trained: TrainedRun, curve: list) -> dict[str, Any]:
    """One run's curves and final errors (see the module docstring)."""
    steps = trained.step_log()
    errors = [row["error"] for row in steps]
    window = max(1, len(errors) // 40)
    rows = [r for r in trained.epoch_log() if r.get("test_error") is not None]
    if len(rows) >= 4:  # per-epoch test errors on the whole split
        test_curve = [(int(r["step"]), float(r["test_error"])) for r in rows]
    else:
        test_curve = []
        for step in trained.snapshots:
            snapshot = trained.at(step)
            test_curve.append((step, 100.0 * error_rate(snapshot.model, curve, snapshot.precision)))
        test_curve.append((int(trained.steps), float(trained.test_error)))
    return {
        **trained.describe(),
        "params": trained.params,
        "train_curve": {"step": [r["step"] for r in steps], "error": smoothed(errors, window), "window": window},
        "test_curve": {"step": [s for s, _ in test_curve], "error": [e for _, e in test_curve]},
        "final_train_error": final_train_error(errors),
        "final_test_error": float(trained.test_error),
    }


def compare(finals: dict[int, list[float]]) -> dict[str, Any]:
    """How the deepest net's final errors compare with the shallowest's, seed by seed and on average."""
    depths = sorted(finals)
    low, high = finals[depths[0]], finals[depths[-1]]
    means = [sum(finals[d]) / len(finals[d]) for d in depths]
    return {
        "shallowest": depths[0],
        "deepest": depths[-1],
        "difference": means[-1] - means[0],
        "separated_higher": min(high) > max(low),  # every seed of the deepest above every seed of the shallowest
        "separated_lower": max(high) < min(low),
        "monotone_higher": all(b > a for a, b in itertools.pairwise(means)),
    }


def planned_runs(options: Options, context: Context) -> list[RunSpec]:
    """Every run the study trains: both twins at every depth and seed, by seed, then depth, plain first."""
    group, plain_name, residual_name, depths = _sweep(options, context)
    return [
        group.spec(name, depth=depth, seed=seed, steps=options.steps)
        for seed in range(options.seeds or group.seeds)
        for depth in depths
        for name in (plain_name, residual_name)
    ]


def _sweep(options: Options, context: Context) -> tuple[DefaultRuns, str, str, tuple[int, ...]]:
    """The group of default runs (its options dropped where --model names other twins), the twins and depths."""
    group = default_runs(NAME, context.budget)[0]
    if options.models:
        group = dataclasses.replace(group, models=tuple(options.models), model_options={}, tag="")
    plain_name, residual_name = twins(group.models)
    depths = tuple(sorted(options.depths or group.depths))
    if len(depths) < 2:
        raise ConfigError(f"degradation compares depths; give at least two (--depths 20,56), got {depths}")
    return group, plain_name, residual_name, depths


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Train the twins at every depth and seed (or reuse them in OUT/runs), then measure and compare them."""
    group, plain_name, residual_name, depths = _sweep(options, context)
    specs = planned_runs(options, context)
    steps = specs[0].steps
    measured: dict[str, dict[int, list[dict[str, Any]]]] = {plain_name: {}, residual_name: {}}
    described: list[dict[str, Any]] = []
    curve: list | None = None
    pairs = [(specs[i], specs[i + 1]) for i in range(0, len(specs), 2)]
    for (depth, seed), (plain_spec, residual_spec) in zip(
        [(d, s) for s in range(options.seeds or group.seeds) for d in depths], context.progress(pairs, "degradation")
    ):
        opened = {
            name: open_trained(context, train_run(context, spec), f"{spec.label} s{seed}")
            for name, spec in ((plain_name, plain_spec), (residual_name, residual_spec))
        }
        check_twins(opened[plain_name].run, opened[residual_name].run)  # before anything is compared
        if curve is None:
            curve = subset_batches(opened[plain_name].run, options.samples, 0)
        for name, trained in opened.items():
            measured[name].setdefault(depth, []).append(measure_run(trained, curve))
            described.append(trained.describe())
    families = {"plain": plain_name, "residual": residual_name}
    numbers: dict[str, Any] = {
        "settings": {
            "plain": plain_name,
            "residual": residual_name,
            "depths": list(depths),
            "seeds": options.seeds or group.seeds,
            "steps": steps,
            "recipe": group.recipe + (f" with {dict(group.changes)}" if group.changes else ""),
            "train_error": f"mean batch error (with augmentation) over the last {TAIL:.0%} of the steps",
            "test_error": "the run's own error on the whole test split",
            "curve_test_samples": len(curve[0][1]) * len(curve) if curve else 0,
        },
        "trained": described,
        "families": families,
        "depths": list(depths),
        "steps": steps,
        "runs": {},
        "final": {},
        "comparison": {},
    }
    for family, name in families.items():
        numbers["runs"][family] = {str(d): measured[name][d] for d in depths}
        numbers["final"][family] = {
            str(d): {
                "train_error": spread(m["final_train_error"] for m in measured[name][d]),
                "test_error": spread(m["final_test_error"] for m in measured[name][d]),
                "params": measured[name][d][0]["params"],
            }
            for d in depths
        }
        numbers["comparison"][family] = compare(
            {d: [m["final_train_error"] for m in measured[name][d]] for d in depths}
        )
    return numbers


def _seed_differences(numbers: dict[str, Any], family: str) -> list[float]:
    """Per training seed: the deepest net's final training error minus the shallowest's."""
    runs, depths = numbers["runs"][family], numbers["depths"]
    low, high = runs[str(depths[0])], runs[str(depths[-1])]
    return [b["final_train_error"] - a["final_train_error"] for a, b in zip(low, high)]


def _over_training(numbers: dict[str, Any], family: str, points: int = 9) -> tuple[list[int], list[float | None]]:
    """The smoothed training error of the deepest net minus the shallowest's (mean over seeds) at ``points``
    evenly spaced steps of the training curve."""
    runs, depths = numbers["runs"][family], numbers["depths"]
    low, high = runs[str(depths[0])], runs[str(depths[-1])]
    steps = low[0]["train_curve"]["step"]
    if not steps:
        return [], []
    at = sorted({round(i * (len(steps) - 1) / (points - 1)) for i in range(points)})

    def mean(curves: list[dict], i: int) -> float:
        return sum(number(c["train_curve"]["error"][i]) for c in curves) / len(curves)

    return [steps[i] for i in at], [mean(high, i) - mean(low, i) for i in at]


def judge(numbers: dict[str, Any]) -> Verdict:
    plain, residual = numbers["families"]["plain"], numbers["families"]["residual"]
    lo, hi = numbers["depths"][0], numbers["depths"][-1]
    checks = [
        Check(
            "plain_degrades",
            f"final training error of {plain} at {hi} layers minus at {lo}",
            tuple(_seed_differences(numbers, "plain")),
            THRESHOLDS["plain_degrades"],
        ),
        Check(
            "residual_no_worse",
            f"final training error of {residual} at {hi} layers minus at {lo}",
            tuple(_seed_differences(numbers, "residual")),
            THRESHOLDS["residual_no_worse"],
        ),
    ]
    final = numbers["final"]

    def err(family: str, depth: int) -> str:
        return f"{number(final[family][str(depth)]['train_error']['mean']):.1f}%"

    found = (
        f"after {numbers['steps']} steps the final training errors at {lo} and {hi} layers are "
        f"{err('plain', lo)} and {err('plain', hi)} ({plain}), {err('residual', lo)} and {err('residual', hi)} "
        f"({residual})"
    )
    moving = {}
    for family, name in numbers["families"].items():
        steps, values = _over_training(numbers, family)
        key = "plain_degrades" if family == "plain" else "residual_no_worse"
        moving[name] = settling(
            steps, values, quantity=f"training-error gap ({hi} - {lo} layers)", threshold=THRESHOLDS[key].value
        )
    return judged(checks, found=found, settling=moving, trained=numbers.get("trained", ()))


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    families, depths = numbers["families"], numbers["depths"]
    return _table(numbers, families, depths), [_figure(numbers, families, depths, numbers["steps"], out)]


def _table(numbers: dict[str, Any], families: dict[str, str], depths: Sequence[int]) -> str:
    lines = [
        "| net | layers | params | final training error (%) | final test error (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for family in families:
        for d in depths:
            row = numbers["final"][family][str(d)]
            label = f"{'plain' if family == 'plain' else 'ResNet'}-{d}"
            train, test = row["train_error"], row["test_error"]
            lines.append(
                f"| {label} ({numbers['runs'][family][str(d)][0]['label'].rsplit(' s', 1)[0]}) | {d} | "
                f"{row['params'] / 1e6:.2f}M | "
                f"{number(train['mean']):.1f} ± {number(train['std']):.1f} | "
                f"{number(test['mean']):.1f} ± {number(test['std']):.1f} |"
            )
    return "\n".join(lines)


def _figure(numbers: dict[str, Any], families: dict[str, str], depths: Sequence[int], steps: int, out: Path) -> Path:
    """Fig. 6 of the paper: plain (left) and residual (right); thin: training error, bold: test error."""
    fig, axes = new_figure(13.0, 4.6, cols=2)
    colours = ["tab:orange", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    top = 0.0
    for ax, (family, name) in zip(axes[0], families.items()):
        for i, d in enumerate(depths):
            colour = colours[i % len(colours)]
            runs = numbers["runs"][family][str(d)]
            label = f"{'plain' if family == 'plain' else 'ResNet'}-{d}"
            for j, m in enumerate(runs):
                train = [number(v) for v in m["train_curve"]["error"]]
                test = [number(v) for v in m["test_curve"]["error"]]
                ax.plot(m["train_curve"]["step"], train, color=colour, lw=0.7, alpha=0.8)
                ax.plot(
                    m["test_curve"]["step"],
                    test,
                    color=colour,
                    lw=2.2,
                    marker="o",
                    ms=3,
                    label=label if j == 0 else None,
                )
                finite = [v for v in test[1:] + train[10:] if math.isfinite(v)]
                top = max(top, max(finite, default=0.0))
        ax.set(xlabel="iteration", ylabel="error (%)")
        ax.set_title(f"{'plain' if family == 'plain' else 'residual'} ({name})", fontsize=9)
        ax.grid(alpha=0.3)
        legend_outside(ax, title="thin: train, bold: test", title_fontsize=8)
    for ax in axes[0]:
        ax.set_ylim(0, min(100.0, top * 1.15 + 1))
        ax.set_xlim(0, steps)
    what = "Training (thin) and test (bold) error of plain and residual twins over depth (He et al. 2015, Fig. 6)"
    titled(fig, what, f"every twin {run_length(numbers['trained'][0])}, {numbers['settings']['seeds']} seeds")
    return save_figure(fig, out, f"{NAME}-curves")
