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
before it compares them. The default budget (400 steps per run, 2 seeds) fits a CPU in about an hour;
``--budget paper`` runs the paper's schedule (he2015-cifar: 64k iterations, lr /10 at 32k and 48k, a 45k/5k
train/validation split) on CIFAR-10, for a GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.models import create_model, list_models
from resnets.runs import Run
from resnets.runs.checkpoint import snapshot_steps
from resnets.runs.directory import RunDir
from resnets.studies.common import (
    StudyOptions,
    StudyResult,
    depth_options,
    error_rate,
    new_figure,
    progress,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.reorder import is_plain
from resnets.studies.trained import DEFAULT_STEPS, PLAIN, RESIDUAL, open_measured, train_short_run

NAME = "degradation"
CLAIM = (
    "Trained with one recipe, deeper plain networks end with a higher training error than shallower ones (the "
    "degradation problem: an optimisation difficulty, not overfitting), while deeper residual networks end with a "
    "lower one (He, Zhang, Ren & Sun 2015, 'Deep Residual Learning for Image Recognition', Sec. 4.2, Fig. 6, "
    "Table 6: plain-56 trains worse than plain-20 on CIFAR-10; ResNet-56 better than ResNet-20)."
)
DEPTHS = (20, 32, 44, 56)
CURVE_SAMPLES = 2000  # test images for the curve points at snapshots (the final point uses the whole test split)
SNAPSHOTS = 9  # weight snapshots per cpu-budget run, evenly spaced, step 0 included
TAIL = 0.1  # the final training error averages the batch errors of this last share of the steps
RESIDUAL_TOLERANCE = 1.0  # points of training error within which a deeper residual net counts as "no worse"
PAPER = {"recipe": "he2015-cifar", "val_size": 5000}  # with 64k steps: the paper's schedule and 45k/5k split
PAPER_STEPS, PAPER_DATA = 64000, "cifar10"


def twins(options: StudyOptions) -> tuple[str, str]:
    """(plain, residual) model names: ``--model`` twice in either order, else plain20 and resnet20."""
    names = options.models or (PLAIN, RESIDUAL)
    if len(names) != 2:
        raise ConfigError(f"degradation compares two twins, a plain and a residual model; got --model {names}")
    plain = [name for name in names if is_plain(create_model(name).residual_blocks())]
    if len(plain) != 1:
        raise ConfigError(f"give one plain model (no shortcuts) and one residual twin; got {', '.join(names)}")
    return plain[0], next(name for name in names if name != plain[0])


def at_depth(name: str, depth: int) -> tuple[str, dict[str, Any], str]:
    """(model, options, run label) of ``name`` with ``depth`` layers: the registered name where one matches
    (plain56, resnet56), so that runs are shared with other instruments, else ``name`` with options."""
    options = depth_options(name, depth)
    candidate = name.rstrip("0123456789") + str(depth)
    if candidate in list_models() and create_model(candidate).config == create_model(name, **options).config:
        return candidate, {}, candidate
    return name, options, f"{name}-d{depth}"


def check_twins(plain: Run, residual: Run) -> None:
    """Refuse runs that differ in anything but the shortcut: their model configs and training records."""
    a, b = dataclasses.asdict(plain.model.config), dataclasses.asdict(residual.model.config)
    differ = sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key) and key != "shortcut")
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


def measure(path: Path, options: StudyOptions, curve: list) -> dict[str, Any]:
    """One run's curves and final errors (see the module docstring)."""
    steps = RunDir(path).read_steps()
    errors = [row["error"] for row in steps]
    window = max(1, len(errors) // 40)
    summary = RunDir(path).read_json("summary.json")
    rows = [r for r in RunDir(path).read_metrics() if r.get("test_error") is not None]
    if len(rows) >= 4:  # per-epoch test errors on the whole split
        test_curve = [(int(r["step"]), float(r["test_error"])) for r in rows]
    else:
        test_curve = []
        for step in sorted(snapshot_steps(path / "checkpoints")):
            snapshot = open_measured(options, path, f"step-{step}")
            test_curve.append((step, 100.0 * error_rate(snapshot.model, curve, snapshot.precision)))
        test_curve.append((int(summary["steps"]), float(summary["test_error"])))
    return {
        "run": str(path),
        "steps": int(summary["steps"]),
        "params": int(summary["params"]),
        "train_curve": {"step": [r["step"] for r in steps], "error": smoothed(errors, window), "window": window},
        "test_curve": {"step": [s for s, _ in test_curve], "error": [e for _, e in test_curve]},
        "final_train_error": final_train_error(errors),
        "final_test_error": float(summary["test_error"]),
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


def run(options: StudyOptions) -> StudyResult:
    """Train the twins at every depth and seed (or reuse them in OUT/runs), then measure and compare them.

    Reads ``models`` (a plain and a residual twin; default plain20, resnet20), ``depths`` (20, 32, 44, 56),
    ``seeds`` (2), ``steps`` (400; 64k with ``--budget paper``), ``samples`` (test images per curve point, 2000),
    ``budget`` and ``data``.
    """
    plain_name, residual_name = twins(options)
    depths = tuple(sorted(options.pick("depths", DEPTHS)))
    if len(depths) < 2:
        raise ConfigError(f"degradation compares depths; give at least two (--depths 20,56), got {depths}")
    paper = options.budget == "paper"
    steps = int(options.pick("steps", PAPER_STEPS if paper else DEFAULT_STEPS))
    settings = {**PAPER, "data": options.data or PAPER_DATA} if paper else None
    draws = list(seeds(options, default=2))
    measured: dict[str, dict[int, list[dict[str, Any]]]] = {plain_name: {}, residual_name: {}}
    curve: list | None = None
    pairs = [(d, s) for s in draws for d in depths]
    for depth, seed in progress(pairs, desc="degradation", quiet=options.quiet):
        paths = {}
        for name in (plain_name, residual_name):
            model, model_options, label = at_depth(name, depth)
            paths[name] = train_short_run(
                options,
                model,
                steps=steps,
                seed=seed,
                snapshots=SNAPSHOTS if not paper else 0,
                model_options=model_options,
                label=f"{label}-paper" if paper else label,
                settings=settings,
            )
        plain_run, residual_run = (open_measured(options, paths[name]) for name in paths)
        check_twins(plain_run, residual_run)  # before anything is compared
        if curve is None:
            curve = subset_batches(plain_run, options.pick("samples", CURVE_SAMPLES), 0)
        for name, path in paths.items():
            measured[name].setdefault(depth, []).append(measure(path, options, curve))
    families = {"plain": plain_name, "residual": residual_name}
    numbers: dict[str, Any] = {"runs": {}, "final": {}, "comparison": {}}
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
    plain_cmp, residual_cmp = numbers["comparison"]["plain"], numbers["comparison"]["residual"]
    plain_worse = plain_cmp["separated_higher"]
    residual_better = residual_cmp["separated_lower"]
    residual_no_worse = residual_cmp["difference"] <= RESIDUAL_TOLERANCE
    numbers["plain_deeper_trains_worse"] = plain_worse
    numbers["residual_deeper_trains_better"] = residual_better
    numbers["residual_deeper_no_worse"] = residual_no_worse
    supported = plain_worse and residual_no_worse
    verdict = _verdict(numbers, plain_name, residual_name, depths, steps)
    figures = [_figure(numbers, families, depths, steps, options.out)]
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings={
            "plain": plain_name,
            "residual": residual_name,
            "depths": list(depths),
            "seeds": len(draws),
            "steps": steps,
            "budget": options.budget,
            "data": (settings or {}).get("data") or options.data or "fashion-mnist",
            "recipe": "he2015-cifar, 45k/5k split" if paper else "default, stopped after `steps` (cosine to 0)",
            "train_error": f"mean batch error (with augmentation) over the last {TAIL:.0%} of the steps",
            "test_error": "the run's own error on the whole test split",
            "curve_test_samples": len(curve[0][1]) * len(curve) if curve else 0,
            "residual_tolerance_points": RESIDUAL_TOLERANCE,
        },
        numbers=numbers,
        table=_table(numbers, families, depths),
        figures=figures,
    )


def _verdict(numbers: dict[str, Any], plain: str, residual: str, depths: Sequence[int], steps: int) -> str:
    final = numbers["final"]
    lo, hi = str(depths[0]), str(depths[-1])

    def err(family: str, depth: str) -> str:
        return f"{final[family][depth]['train_error']['mean']:.1f}%"

    plain_text = (
        f"deeper plain nets train worse ({plain} at {hi} layers ends at {err('plain', hi)} training error against "
        f"{err('plain', lo)} at {lo}, every seed)"
        if numbers["plain_deeper_trains_worse"]
        else f"deeper plain nets do not clearly train worse ({err('plain', hi)} at {hi} layers, {err('plain', lo)} at "
        f"{lo})"
    )
    if numbers["residual_deeper_trains_better"]:
        residual_text = f"deeper residual nets train better ({err('residual', hi)} against {err('residual', lo)})"
    elif numbers["residual_deeper_no_worse"]:
        residual_text = (
            f"deeper residual nets train no worse ({err('residual', hi)} at {hi} layers against {err('residual', lo)} "
            f"at {lo}, within {RESIDUAL_TOLERANCE:g} point) but not clearly better"
        )
    else:
        residual_text = f"deeper residual nets train worse too ({err('residual', hi)} against {err('residual', lo)})"
    return f"After {steps} steps, {plain_text}; {residual_text}."


def _table(numbers: dict[str, Any], families: dict[str, str], depths: Sequence[int]) -> str:
    lines = [
        "| net | layers | params | final training error (%) | final test error (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for family, name in families.items():
        for d in depths:
            row = numbers["final"][family][str(d)]
            label = f"{'plain' if family == 'plain' else 'ResNet'}-{d}"
            train, test = row["train_error"], row["test_error"]
            lines.append(
                f"| {label} ({at_depth(name, d)[2]}) | {d} | {row['params'] / 1e6:.2f}M | "
                f"{train['mean']:.1f} ± {train['std']:.1f} | {test['mean']:.1f} ± {test['std']:.1f} |"
            )
    return "\n".join(lines)


def _figure(numbers: dict[str, Any], families: dict[str, str], depths: Sequence[int], steps: int, out: str) -> Path:
    """Fig. 6 of the paper: plain (left) and residual (right); thin: training error, bold: test error."""
    fig, axes = new_figure(12.0, 4.4, cols=2)
    colours = ["tab:orange", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    top = 0.0
    for ax, (family, name) in zip(axes[0], families.items()):
        for i, d in enumerate(depths):
            colour = colours[i % len(colours)]
            runs = numbers["runs"][family][str(d)]
            label = f"{'plain' if family == 'plain' else 'ResNet'}-{d}"
            for j, m in enumerate(runs):
                ax.plot(m["train_curve"]["step"], m["train_curve"]["error"], color=colour, lw=0.7, alpha=0.8)
                ax.plot(
                    m["test_curve"]["step"],
                    m["test_curve"]["error"],
                    color=colour,
                    lw=2.2,
                    marker="o",
                    ms=3,
                    label=label if j == 0 else None,
                )
                top = max(top, max(m["test_curve"]["error"][1:] or [0]), max(m["train_curve"]["error"][10:] or [0]))
        ax.set(xlabel="iteration", ylabel="error (%)", title=f"{'plain' if family == 'plain' else 'residual'} ({name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="thin: train, bold: test", title_fontsize=8)
    for ax in axes[0]:
        ax.set_ylim(0, min(100.0, top * 1.15 + 1))
        ax.set_xlim(0, steps)
    return save_figure(fig, out, f"{NAME}-curves")
