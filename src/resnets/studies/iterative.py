"""Unrolled iterative estimation: do the units of a stage refine one representation? (Greff et al. 2017)

Greff, Srivastava & Schmidhuber ("Highway and Residual Networks learn Unrolled Iterative Estimation", ICLR
2017) argue that the units of one stage of a Highway or Residual net do not compute new representations one
after another, as the layers of a plain net do, but keep refining the same estimate: each adds a small
correction to a representation that stays recognisably the same. Measured on a seeded test subset per seed:

* ``cos_prev``: the cosine similarity of consecutive units' outputs within a stage, cos(y_{i-1}, y_i), each
  output flattened per sample, averaged over samples (none for a stage's first unit, nor for a dense layer,
  whose output is only its new features, not the stage's representation);
* ``cos_io``: the cosine of a unit's input and output, cos(x, y) (equal to ``cos_prev`` where units follow each
  other directly; defined for every shape-preserving unit, a stage's first one included);
* ``ratio``: the relative size of a unit's update, ||F(x)|| / ||x|| per sample, averaged, with F(x) the
  branch before any residual scale (a tap, as ``capture()`` reads it) and x the unit's input (a forward
  pre-hook; units fed a list, such as multi-skip MLP layers, have none); for a plain unit F(x) is everything
  it computes;
* shuffles, ``DRAWS`` seeded draws per seed, error increase over the unperturbed net (mean and spread, over
  all draws and per stage): ``within``: the shape-preserving units of one stage permuted at random among that
  stage's positions (at least one displaced), the other stages untouched, each stage in turn; ``drop``: as
  many random shape-preserving units of that stage deleted as the paired ``within`` draw displaced, the cost
  of losing those units altogether, for scale; ``across``: shape-preserving units of equal shape permuted
  regardless of stage, at least one landing in another stage (only where two stages have units of one shape,
  which CIFAR-style nets, whose stages double the width, never have: then not applicable).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.device import Precision
from resnets.models.base import BlockInfo
from resnets.runs import Run
from resnets.studies.common import BN_EVAL_MODE, Batches, error_rate, number, over_training_rows, spread, subset_batches
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.reorder import is_plain, is_residual, rearranged
from resnets.studies.trained import over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "iterative"
CLAIM = (
    "The units within a stage of a Highway or Residual net refine the same representation rather than compute "
    "new ones: consecutive units' outputs stay similar, each update is small next to its input, and reordering "
    "units within a stage costs little, unlike in a plain net (Greff, Srivastava & Schmidhuber 2017, 'Highway and "
    "Residual Networks learn Unrolled Iterative Estimation', ICLR)."
)
GREFF = "Greff, Srivastava & Schmidhuber 2017"
THRESHOLDS = {
    "similar": Threshold(
        0.0,
        above=True,
        unit="",
        paper="'a group of successive layers iteratively refine their estimates of the same features instead of "
        "computing an entirely new representation' (abstract), so consecutive representations of a stage stay "
        "alike, unlike a plain net's layers; no number given",
        source=f"{GREFF}, Sec. 3 (unrolled iterative estimation)",
        why="our line: the cosine of consecutive units' outputs minus the plain twin's above 0",
    ),
    "small_update": Threshold(
        1.0,
        above=False,
        unit="x",
        paper="each unit adds a correction to its input's estimate instead of computing a new representation, "
        "as the layers of a plain net do; the paper gives no size for the correction",
        source=f"{GREFF}, Sec. 3",
        why="our line, against the plain twin rather than a fixed size: the mean update ratio ||F(x)|| / ||x|| "
        "of the net's shape-preserving units over the plain twin's (whose F(x) is all a unit outputs) below 1; "
        "a fixed line at ratio 1 sat on the measurement (0.99 and 1.01 in two runs of one command)",
    ),
    "shuffle_gentle": Threshold(
        0.0,
        above=False,
        unit="points",
        paper="shuffling or dropping layers within a stage of a trained Highway or Residual net costs little, "
        "as the iterative view predicts (their lesion and reordering experiments, after Veit et al. 2016)",
        source=f"{GREFF}, Sec. 4",
        why="our line: the error rise of a within-stage shuffle minus the plain twin's below 0",
    ),
}
DRAWS = 1  # draws per seed, stage and kind (3 seeds: 3 draws per stage)
PERTURBATIONS = ("within", "across", "drop")
UNLEARNED = 0.9  # a net whose error is above this share of chance learned nothing a shuffle could show


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(500, "test images per seed (seed s draws its own subset)")
    seeds: int = option(3, "test subsets, each with its own shuffles")


def unit_statistics(
    model: nn.Module, blocks: Sequence[BlockInfo], batches: Batches, precision: Precision
) -> list[dict[str, float | None]]:
    """Per unit: mean ``cos_prev``, ``cos_io`` and ``ratio`` over the samples (see the module docstring)."""
    sums = [{"cos_prev": 0.0, "cos_io": 0.0, "ratio": 0.0} for _ in blocks]
    defined = [{"cos_prev": False, "cos_io": False, "ratio": False} for _ in blocks]
    state: dict[str, Any] = {}

    def before(_module: nn.Module, args: tuple) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        state["x"] = None if x is None else x.detach().float().flatten(1).clone()  # (B, D)
        state["branch"] = None

    def tap(branch: torch.Tensor, _shortcut: torch.Tensor | None) -> None:
        state["branch"] = branch.detach().float().flatten(1).norm(dim=1)  # (B,), before any in-place op

    def after(info: BlockInfo) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            i, y = info.index, output.detach().float().flatten(1)
            x, branch, (stage, prev) = state["x"], state["branch"], state.get("prev", (None, None))
            if x is not None and x.shape == y.shape:
                _add(sums[i], defined[i], "cos_io", F.cosine_similarity(x, y, dim=1).sum())
            if x is not None and branch is not None:
                _add(sums[i], defined[i], "ratio", (branch / x.norm(dim=1).clamp_min(1e-12)).sum())
            if stage == info.stage and prev is not None and prev.shape == y.shape and info.unit.join == "add":
                _add(sums[i], defined[i], "cos_prev", F.cosine_similarity(prev, y, dim=1).sum())
            state["prev"] = (info.stage, y.clone())

        return hook

    n = 0
    with ExitStack() as stack, torch.inference_mode(), precision.autocast():
        for info in blocks:
            stack.enter_context(info.unit.tapped(tap))
            stack.callback(info.module.register_forward_pre_hook(before).remove)
            stack.callback(info.module.register_forward_hook(after(info)).remove)
        for x, _ in batches:
            state.clear()
            model(x)
            n += len(x)
    return [{k: (s[k] / n if d[k] else None) for k in s} for s, d in zip(sums, defined)]


def _add(sums: dict[str, float], defined: dict[str, bool], key: str, value: torch.Tensor) -> None:
    sums[key] += float(value)
    defined[key] = True


def within_stage_order(blocks: Sequence[BlockInfo], rng: random.Random, stage: int) -> list[int] | None:
    """A random order permuting the shape-preserving units of ``stage`` among their positions, at least one
    displaced; None where the stage has fewer than two such units."""
    groups: dict[Any, list[int]] = {}
    for b in blocks:
        if b.stage == stage and not b.changes_shape:
            groups.setdefault(b.unit.io_shape, []).append(b.index)
    return _permuted(len(blocks), list(groups.values()), rng, lambda order: order != list(range(len(blocks))))


def across_stage_order(blocks: Sequence[BlockInfo], rng: random.Random) -> list[int] | None:
    """A random order permuting equal-shape units regardless of stage, at least one moved to another stage;
    None where no two stages have shape-preserving units of one shape."""
    groups: dict[Any, list[int]] = {}
    for b in blocks:
        if not b.changes_shape:
            groups.setdefault(b.unit.io_shape, []).append(b.index)
    mixed = [g for g in groups.values() if len({blocks[i].stage for i in g}) > 1]
    return _permuted(
        len(blocks), mixed, rng, lambda order: any(blocks[j].stage != blocks[i].stage for i, j in enumerate(order))
    )


def _permuted(n: int, groups: list[list[int]], rng: random.Random, accept: Any) -> list[int] | None:
    """Shuffle the positions of each group until ``accept(order)`` (None after 1000 tries or with no group)."""
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return None
    for _ in range(1000):
        order = list(range(n))
        for g in groups:
            for position, unit in zip(g, rng.sample(g, len(g))):
                order[position] = unit
        if accept(order):
            return order
    return None


def perturbed_errors(
    model: nn.Module,
    blocks: Sequence[BlockInfo],
    batches: Batches,
    precision: Precision,
    rng: random.Random,
    draws: int,
) -> dict[str, list[tuple[int | None, float]]]:
    """(stage, error) of ``draws`` within-stage shuffles and matched drops per stage, and (None, error) of
    ``draws`` across-stage shuffles."""
    result: dict[str, list[tuple[int | None, float]]] = {kind: [] for kind in PERTURBATIONS}
    for stage in sorted({b.stage for b in blocks}):
        movable = [b.index for b in blocks if b.stage == stage and not b.changes_shape]
        for _ in range(draws):
            order = within_stage_order(blocks, rng, stage)
            if order is None:
                break
            with rearranged(model, blocks, order):
                result["within"].append((stage, error_rate(model, batches, precision)))
            with ExitStack() as stack:
                for i in rng.sample(movable, sum(1 for i, j in enumerate(order) if i != j)):
                    stack.enter_context(blocks[i].lesioned())
                result["drop"].append((stage, error_rate(model, batches, precision)))
    for _ in range(draws):
        order = across_stage_order(blocks, rng)
        if order is None:
            break
        with rearranged(model, blocks, order):
            result["across"].append((None, error_rate(model, batches, precision)))
    return result


def measure_run(run: Run, options: Options, context: Context, *, desc: str = "") -> dict[str, Any]:
    """The statistics of every unit and the shuffle errors of one run, over the seeds' test subsets."""
    model, precision = run.model.eval(), run.precision
    blocks = model.residual_blocks()
    base: list[float] = []
    stats: list[list[dict[str, float | None]]] = []
    increases: dict[str, list[tuple[int | None, float]]] = {kind: [] for kind in PERTURBATIONS}
    within_by_seed: list[float | None] = []
    for seed in context.progress(range(options.seeds), desc):
        batches = subset_batches(run, options.samples, seed)
        base.append(error_rate(model, batches, precision))
        stats.append(unit_statistics(model, blocks, batches, precision))
        found = perturbed_errors(model, blocks, batches, precision, random.Random(2000 + seed), DRAWS)
        for kind, errs in found.items():
            increases[kind] += [(stage, e - base[-1]) for stage, e in errs]
        within = [100 * (e - base[-1]) for _, e in found["within"]]
        within_by_seed.append(sum(within) / len(within) if within else None)
    units = []
    for info in blocks:
        row: dict[str, Any] = {"name": info.name, "stage": info.stage, "index": info.index}
        row.update({"changes_shape": info.changes_shape, "has_shortcut": info.has_shortcut})
        for key in ("cos_prev", "cos_io", "ratio"):
            values = [s[info.index][key] for s in stats]
            row[key] = spread(values) if values[0] is not None else None
        units.append(row)

    def over_units(key: str) -> dict[str, float]:
        return spread(u[key]["mean"] for u in units if u[key] is not None and not u["changes_shape"])

    def seed_mean(key: str, s: int) -> float | None:
        values = [stats[s][b.index][key] for b in blocks if not b.changes_shape]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {
        "residual": is_residual(blocks),
        "plain": is_plain(blocks),
        "baseline_error": spread(base),
        "units": units,
        "cos_prev": over_units("cos_prev"),
        "cos_io": over_units("cos_io"),
        "ratio": over_units("ratio"),
        "shuffles": {kind: _summary(increases[kind]) for kind in PERTURBATIONS},
        "by_seed": {
            "cos_prev": [seed_mean("cos_prev", s) for s in range(options.seeds)],
            "ratio": [seed_mean("ratio", s) for s in range(options.seeds)],
            "within_rise": within_by_seed,
        },
    }


def update_ratio(run: Run, samples: int) -> float | None:
    """The mean update ratio ||F(x)|| / ||x|| over shape-preserving units on the first seed's subset."""
    blocks = run.model.eval().residual_blocks()
    stats = unit_statistics(run.model, blocks, subset_batches(run, samples, 0), run.precision)
    values = [s["ratio"] for b, s in zip(blocks, stats) if not b.changes_shape and s["ratio"] is not None]
    return sum(values) / len(values) if values else None


def _summary(increases: list[tuple[int | None, float]]) -> dict[str, Any] | None:
    """Mean and spread of the error increases over all draws, and per stage where the draws have one."""
    if not increases:
        return None
    stages = sorted({stage for stage, _ in increases if stage is not None})
    by_stage = {str(s): spread(v for stage, v in increases if stage == s) for s in stages}
    return {"increase": spread(v for _, v in increases), "by_stage": by_stage}


def measure(options: Options, context: Context) -> dict[str, Any]:
    """The default residual, Highway and plain nets (or the given runs); see the module docstring."""
    runs = trained_runs(NAME, options, context)
    models = {}
    for trained in runs:
        found = measure_run(trained.run, options, context, desc=f"iterative {trained.label}")
        over = over_snapshots(
            trained, lambda r: update_ratio(r, options.samples), f"iterative {trained.label} snapshots"
        )
        models[trained.label] = {**trained.describe(), **found, "over_training": over}
    return {
        "settings": {
            "draws_per_seed_and_stage": DRAWS,
            "bn": BN_EVAL_MODE,
            "subset": "test split, seed s draws its own subset without replacement",
            "within": "one stage's shape-preserving units permuted among its positions (>= 1 displaced), stage by "
            "stage",
            "across": "equal-shape shape-preserving units permuted regardless of stage, >= 1 in another stage",
            "drop": "as many random shape-preserving units of the stage deleted as the paired within draw displaced",
            "over_training": "the mean update ratio at every kept snapshot, on the first seed's subset",
        },
        "trained": [r.describe() for r in runs],
        "chance_error": 1 - 1 / runs[0].run.record.num_classes,
        "models": models,
    }


def judge(numbers: dict[str, Any]) -> Verdict:
    measured, chance = numbers["models"], numbers["chance_error"]
    shortcut = {k: m for k, m in measured.items() if m["residual"]}
    plain = {k: m for k, m in measured.items() if m["plain"]}
    if not shortcut or not plain:
        return judged(
            [], missing="the runs measured lack a residual or Highway net or a plain twin to contrast it with"
        )
    unlearned = [k for k, m in measured.items() if number(m["baseline_error"]["mean"]) > UNLEARNED * chance]
    if unlearned:
        return judged([], missing=f"{', '.join(unlearned)} did not learn (error within 10% of chance)")
    p_name, p = next(iter(plain.items()))
    checks, moving = [], {}
    for name, m in shortcut.items():
        checks += [
            Check(
                "similar",
                f"cosine of consecutive outputs, {name} minus {p_name}",
                _paired(m["by_seed"]["cos_prev"], p["by_seed"]["cos_prev"]),
                THRESHOLDS["similar"],
            ),
            Check(
                "small_update",
                f"{name}'s update ratio over {p_name}'s",
                _paired(m["by_seed"]["ratio"], p["by_seed"]["ratio"], lambda a, b: a / b if b else None),
                THRESHOLDS["small_update"],
            ),
            Check(
                "shuffle_gentle",
                f"error rise of a within-stage shuffle, {name} minus {p_name}",
                _paired(m["by_seed"]["within_rise"], p["by_seed"]["within_rise"]),
                THRESHOLDS["shuffle_gentle"],
            ),
        ]
        over = m["over_training"]
        moving[name] = settling(over["steps"], over["values"], quantity="update ratio")
    found = "; ".join(
        f"{name}: consecutive-output cosine {number(m['cos_prev']['mean']):.2f}, update ratio "
        f"{number(m['ratio']['mean']):.2f}"
        for name, m in measured.items()
    )
    return judged(checks, found=found, settling=moving, trained=numbers.get("trained", ()))


def _paired(
    a: Sequence[float | None],
    b: Sequence[float | None],
    how: Callable[[float, float], float | None] = lambda x, y: x - y,
) -> tuple[float | None, ...]:
    """``how(a_s, b_s)`` (by default the difference) for each seed s where both were measured."""
    return tuple(None if x is None or y is None else how(x, y) for x, y in zip(a, b))


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    table = _table(numbers["models"], numbers["chance_error"])
    return table, _figures(numbers["models"], out, trained_for(numbers["trained"]))


def _table(measured: dict[str, dict[str, Any]], chance: float) -> str:
    def pct(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "n/a"
        return _pp(entry["increase"])

    rows = [
        (
            "| model | baseline error % | cos(y_{i-1}, y_i) | cos(x, y) | ‖F(x)‖/‖x‖ | within-stage shuffle | "
            "across-stage shuffle | matched drop |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, m in measured.items():
        b, s = m["baseline_error"], m["shuffles"]
        rows.append(
            f"| {label} | {100 * number(b['mean']):.1f} ± {100 * number(b['std']):.1f} | "
            f"{number(m['cos_prev']['mean']):.3f} | {number(m['cos_io']['mean']):.3f} | {number(m['ratio']['mean']):.3f} | "
            f"{pct(s['within'])} | {pct(s['across'])} | {pct(s['drop'])} |"
        )
    rows += [
        "",
        (
            "Means over the shape-preserving units; shuffle columns: error change in percentage points (mean ± std "
            f"over draws, all stages pooled); chance error {100 * chance:.1f} %. Across-stage shuffles are n/a where "
            "no two stages have units of one shape."
        ),
        "",
        "| model | stage | within-stage shuffle | matched drop |",
        "|---|---|---|---|",
    ]
    for label, m in measured.items():
        within, drop = m["shuffles"]["within"], m["shuffles"]["drop"]
        for stage, stats in (within["by_stage"] if within else {}).items():
            rows.append(f"| {label} | {stage} | {_pp(stats)} | {_pp(drop['by_stage'][stage])} |")
    rows += over_training_rows(measured, "mean update ratio ‖F(x)‖/‖x‖", ".3f")
    return "\n".join(rows)


def _stages(m: dict[str, Any]) -> list[str]:
    within = m["shuffles"]["within"]
    return list(within["by_stage"]) if within else []


def _pp(stats: dict[str, Any]) -> str:
    return f"{100 * number(stats['mean']):+.1f} ± {100 * number(stats['std']):.1f}"


def _figures(measured: dict[str, dict[str, Any]], out: Path, training: str) -> list[Path]:
    figures = []
    fig, axes = new_figure(11.5, 4.2, cols=2)
    for label, m in measured.items():
        for ax, key in zip(axes[0], ("cos_prev", "ratio")):
            points = [(u["index"], u[key]) for u in m["units"] if u[key] is not None]
            ax.errorbar(
                [i for i, _ in points],
                [number(s["mean"]) for _, s in points],
                yerr=[number(s["std"]) for _, s in points],
                marker="o",
                capsize=2,
                label=label,
            )
    axes[0][0].set_ylabel("cos(y_{i-1}, y_i), mean over samples")
    axes[0][0].set_title("Consecutive outputs within a stage")
    axes[0][1].set_ylabel("||F(x)|| / ||x||, mean over samples")
    axes[0][1].set_title("Relative size of each update")
    axes[0][1].set_yscale("log")
    for ax in axes[0]:
        ax.set_xlabel("unit (index in forward order)")
    legend_outside(axes[0][1])
    titled(fig, "Do the units of a stage refine one representation? (Greff et al. 2017)", training)
    figures.append(save_figure(fig, out, f"{NAME}-units"))

    fig, ax = new_figure(max(6.4, 1.2 * sum(len(_stages(m)) + 1 for m in measured.values())), 4.2)
    ticks, names, x = [], [], 0.0
    for label, m in measured.items():
        for kind, offset in (("within", -0.2), ("drop", 0.2)):
            entry = m["shuffles"][kind]
            stages = _stages(m)
            if entry is None:
                continue
            ax.bar(
                [x + i + offset for i in range(len(stages))],
                [100 * number(entry["by_stage"][s]["mean"]) for s in stages],
                0.4,
                yerr=[100 * number(entry["by_stage"][s]["std"]) for s in stages],
                capsize=2,
                color="tab:blue" if kind == "within" else "tab:grey",
                label=None if ticks else {"within": "shuffle within the stage", "drop": "matched drop"}[kind],
            )
        across = m["shuffles"]["across"]
        note = "across: n/a" if across is None else f"across: {_pp(across['increase'])}"
        ticks += [x + i for i in range(len(_stages(m)))]
        names += [f"{label}\nstage {s}" + (f"\n({note})" if i == 0 else "") for i, s in enumerate(_stages(m))]
        x += len(_stages(m)) + 1
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, fontsize=7)
    ax.set_xlabel("model and stage")
    ax.set_ylabel("error increase (percentage points), mean ± std")
    legend_outside(ax)
    titled(fig, "Error rise when the units of one stage are shuffled, against deleting as many", training)
    figures.append(save_figure(fig, out, f"{NAME}-shuffles"))
    return figures
