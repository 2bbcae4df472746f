"""Lesion study: delete, k-delete and swap the units of trained nets (Veit, Wilber & Belongie 2016).

Veit et al. ("Residual Networks Behave Like Ensembles of Relatively Shallow Networks", NeurIPS 2016) read a
ResNet as a collection of paths of many lengths: deleting one unit removes only half of the paths, so the test
error barely moves, except at the downsampling units, whose shortcut is not the identity; a plain (VGG-like)
net has one path, and deleting any layer breaks it. Error grows smoothly with the number of deleted units, and
swapping units hurts gracefully. Measured here on a seeded subset of the test split per seed, for each run:

* ``units``: the error with each unit deleted in turn (``BlockInfo.lesioned``); downsampling units
  (``changes_shape``) are marked, and plain units that change shape cannot be deleted (reported as such);
* ``k_deleted``: the error with k random shape-preserving units deleted at once, k = 1..N (the N units every
  family can delete, so the residual net and its plain twin lose the same positions), a few draws per seed;
* ``swaps``: the error with two shape-preserving units of the same stage exchanged, for every such pair;
* ``over_training``: the median rise for one deleted unit at every snapshot the run kept (the first seed's
  subset), to see whether it had settled.

Swapping uses :func:`~resnets.studies.reorder.rearranged`, which puts unit modules at other units' positions
and checks with taps that the forward pass really ran them in the new order.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

from torch import nn

from resnets.device import Precision
from resnets.errors import LesionError
from resnets.models.base import BlockInfo
from resnets.runs import Run
from resnets.studies.common import BN_EVAL_MODE, Batches, error_rate, number, over_training_rows, spread, subset_batches
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.reorder import is_plain, is_residual, rearranged
from resnets.studies.trained import TrainedRun, over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "lesion"
CLAIM = (
    "Deleting a single unit of a trained ResNet barely changes its test error, except at downsampling units, "
    "while deleting a layer of a plain (VGG-like) net destroys it; the error grows smoothly with the number of "
    "deleted units, and reordering units hurts gracefully (Veit, Wilber & Belongie 2016, 'Residual Networks "
    "Behave Like Ensembles of Relatively Shallow Networks', Sec. 4.1-4.3, Fig. 3 and 5)."
)
VEIT = "Veit, Wilber & Belongie 2016"
VEIT_SINGLE = (
    "read off Fig. 3(a) (ResNet-110 v2, 54 modules, CIFAR-10): baseline error about 6.2%; deleting almost any one "
    "module leaves it at 6.1-6.8% (a median rise well under 1 point), the downsampling modules 19 and 37 raise it "
    "to about 12%, and two others stand out, module 1 (about 42%) and module 11 (about 11%); the text gives no "
    "number"
)
THRESHOLDS = {
    "single": Threshold(
        2.0,
        above=False,
        unit="points",
        paper=VEIT_SINGLE,
        source=f"{VEIT}, Sec. 4.1, Fig. 3(a)",
        why="our line on the cpu budget: the median rise over shape-preserving units below 2 points, twice the "
        "paper's, for a net of ResNet-110's 54 units but 16-64 channels, trained for 4 epochs on Fashion-MNIST",
    ),
    "single_paper": Threshold(
        1.0,
        above=False,
        unit="points",
        paper=VEIT_SINGLE,
        source=f"{VEIT}, Sec. 4.1, Fig. 3(a)",
        why="the paper's own line on --budget paper (ResNet-110 on CIFAR-10 as in the paper): the median rise "
        "over shape-preserving units below 1 point",
    ),
    "relative": Threshold(
        0.5,
        above=False,
        unit="x",
        paper="read off Fig. 3(a): deleting any one layer of the 15-layer VGG sends its error from about 8.7% "
        "to 88-98% (a rise of about 80-90 points) against about 1 point on average for ResNet-110: a ratio "
        "near 0.01",
        source=f"{VEIT}, Sec. 4.1, Fig. 3(a)",
        why="our line: the residual net's mean rise for one deleted unit over its plain twin's below 0.5",
    ),
    "smooth": Threshold(
        0.0,
        above=False,
        unit="points",
        paper="'Error increases smoothly when randomly deleting several modules from a residual network' "
        "(Fig. 5a caption); read off Fig. 5(a): the median error rises from about 6% (1 module deleted) to "
        "about 19% (10) and 58% (20), its largest step about 19 points (15 to 16 modules); no plain net is shown",
        source=f"{VEIT}, Sec. 4.2, Fig. 5(a)",
        why="our line: the residual net's largest step up of the k-deletion curve minus its plain twin's",
    ),
    "swaps": Threshold(
        0.0,
        above=False,
        unit="points",
        paper="'Error also increases smoothly when re-ordering a residual network by shuffling building blocks' "
        "(Fig. 5b caption); read off Fig. 5(b): about 6.5% at Kendall tau 0.99 rising to about 66% at 0.84; "
        "no plain net is shown",
        source=f"{VEIT}, Sec. 4.3, Fig. 5(b)",
        why="our line: the residual net's mean rise for one swap minus its plain twin's",
    ),
}
DRAWS = 1  # random k-subsets per k and seed (all subsets where there are fewer); 3 seeds: 3 draws per k
MAX_SWAPS = 48  # swapped pairs measured per net, drawn once by SWAP_SEED where a net has more (54 units: 408)
SWAP_SEED = 0
UNLEARNED = 0.9  # a net whose error is above this share of chance learned nothing a lesion could show


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(500, "test images per seed (seed s draws its own subset)")
    seeds: int = option(3, "test subsets, each with its own k-deletion draws")


# -- the three measurements ------------------------------------------------------------------------------


def single_lesions(model: nn.Module, blocks: Sequence[BlockInfo], batches: Batches, precision: Precision) -> list:
    """The error with each unit deleted in turn; None where the unit cannot be deleted (LesionError)."""
    errors: list[float | None] = []
    for info in blocks:
        try:
            with info.lesioned():
                errors.append(error_rate(model, batches, precision))
        except LesionError:
            errors.append(None)
    return errors


def k_deletions(
    model: nn.Module,
    blocks: Sequence[BlockInfo],
    pool: Sequence[int],
    batches: Batches,
    precision: Precision,
    *,
    draws: int,
    rng: random.Random,
) -> dict[int, list[float]]:
    """For k = 1..len(pool): the errors with ``draws`` random k-subsets of ``pool`` (block positions) deleted."""
    result: dict[int, list[float]] = {}
    for k in range(1, len(pool) + 1):
        result[k] = []
        for subset in _subsets(pool, k, draws, rng):
            with ExitStack() as stack:
                for i in subset:
                    stack.enter_context(blocks[i].lesioned())
                result[k].append(error_rate(model, batches, precision))
    return result


def _subsets(pool: Sequence[int], k: int, draws: int, rng: random.Random) -> list[tuple[int, ...]]:
    """All k-subsets where there are at most ``draws``, else ``draws`` distinct random ones."""
    if math.comb(len(pool), k) <= draws:
        return list(combinations(pool, k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < draws:
        chosen.add(tuple(sorted(rng.sample(list(pool), k))))
    return sorted(chosen)


def swap_pairs(blocks: Sequence[BlockInfo], limit: int | None = None) -> list[tuple[int, int]]:
    """Pairs of shape-preserving units of the same stage and equal shape: the units that can swap; at most
    ``limit`` of them, drawn by :data:`SWAP_SEED` and kept in order, where there are more."""
    pairs = [
        (a.index, b.index)
        for a, b in combinations(blocks, 2)
        if a.stage == b.stage and not a.changes_shape and not b.changes_shape and a.unit.io_shape == b.unit.io_shape
    ]
    if limit is None or len(pairs) <= limit:
        return pairs
    return sorted(random.Random(SWAP_SEED).sample(pairs, limit))


def swapped_errors(
    model: nn.Module,
    blocks: Sequence[BlockInfo],
    pairs: Sequence[tuple[int, int]],
    batches: Batches,
    precision: Precision,
) -> list[float]:
    """The error with each pair of units exchanged."""
    errors = []
    for a, b in pairs:
        order = list(range(len(blocks)))
        order[a], order[b] = b, a
        with rearranged(model, blocks, order):
            errors.append(error_rate(model, batches, precision))
    return errors


def median_single_rise(model: nn.Module, batches: Batches, precision: Precision) -> float | None:
    """The median error rise (points) over the deletable shape-preserving units: the headline of one net."""
    blocks = model.eval().residual_blocks()
    base = error_rate(model, batches, precision)
    rises = [
        100 * (e - base)
        for info, e in zip(blocks, single_lesions(model, blocks, batches, precision))
        if e is not None and not info.changes_shape
    ]
    return statistics.median(rises) if rises else None


# -- measure ---------------------------------------------------------------------------------------------


def measure_run(run: Run, options: Options, context: Context, *, desc: str = "") -> dict[str, Any]:
    """Every lesion number of one run, each over the seeds' test subsets (and draws); rises in points."""
    model, precision = run.model.eval(), run.precision
    blocks = model.residual_blocks()
    pool = [b.index for b in blocks if not b.changes_shape]
    pairs = swap_pairs(blocks, MAX_SWAPS)
    base, singles, kdel, swaps = [], [], [], []
    for seed in context.progress(range(options.seeds), desc):
        batches = subset_batches(run, options.samples, seed)
        base.append(error_rate(model, batches, precision))
        singles.append(single_lesions(model, blocks, batches, precision))
        rng = random.Random(1000 + seed)
        kdel.append(k_deletions(model, blocks, pool, batches, precision, draws=DRAWS, rng=rng))
        swaps.append(swapped_errors(model, blocks, pairs, batches, precision))
    units = []
    for info in blocks:
        errs = [s[info.index] for s in singles]
        deletable = errs[0] is not None
        units.append(
            {
                "name": info.name,
                "stage": info.stage,
                "index": info.index,
                "downsampling": info.changes_shape,
                "has_shortcut": info.has_shortcut,
                "deletable": deletable,
                "error": spread(errs) if deletable else None,
                "increase": spread(e - b for e, b in zip(errs, base)) if deletable else None,
            }
        )
    kept = [u for u in units if u["deletable"] and not u["downsampling"]]
    down = [u for u in units if u["deletable"] and u["downsampling"]]

    def rises(s: int, names: Sequence[dict]) -> list[float]:
        return [100 * (singles[s][u["index"]] - base[s]) for u in names]

    seeds = range(options.seeds)
    all_k = {k: [e for curve in kdel for e in curve[k]] for k in kdel[0]} if kdel else {}
    base_mean = spread(base)["mean"]
    return {
        "residual": is_residual(blocks),
        "plain": is_plain(blocks),
        "baseline_error": spread(base),
        "units": units,
        "single_increase": spread(u["increase"]["mean"] for u in kept),
        "single_increase_median": statistics.median(u["increase"]["mean"] for u in kept) if kept else math.nan,
        "downsampling_increase": spread(u["increase"]["mean"] for u in down),
        "not_deletable": [u["name"] for u in units if not u["deletable"]],
        "k_pool": [blocks[i].name for i in pool],
        "k_deleted": [
            {"k": k, "error": spread(v), "increase": spread(v)["mean"] - base_mean} for k, v in all_k.items()
        ],
        "swaps": [
            {
                "a": blocks[a].name,
                "b": blocks[b].name,
                "stage": blocks[a].stage,
                "error": spread(s[p] for s in swaps),
                "increase": spread(s[p] - b0 for s, b0 in zip(swaps, base)),
            }
            for p, (a, b) in enumerate(pairs)
        ],
        "by_seed": {  # the headline numbers of each seed's subset, in points: the intervals of the verdict
            "baseline_error": [100 * b for b in base],
            "single_rise": [_mean(rises(s, kept)) for s in seeds],
            "single_rise_median": [statistics.median(rises(s, kept)) if kept else None for s in seeds],
            "k_largest_step": [_largest_step(base[s], [_mean(kdel[s][k]) for k in kdel[s]]) for s in seeds],
            "swap_rise": [_mean([100 * (e - base[s]) for e in swaps[s]]) for s in seeds],
        },
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _largest_step(start: float, curve: Sequence[float | None]) -> float | None:
    """The largest rise (points) of the error from k-1 to k deleted units (k = 0 is the baseline)."""
    points = [start, *curve]
    steps = [100 * (b - a) for a, b in pairwise(points) if a is not None and b is not None]
    return max(steps, default=None)


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Lesion the default residual net and its plain twin (or the given runs); see the module docstring."""
    runs = trained_runs(NAME, options, context)
    models: dict[str, Any] = {}
    for trained in runs:
        measured = measure_run(trained.run, options, context, desc=f"lesion {trained.label}")
        models[trained.label] = {**trained.describe(), **measured, "over_training": _over_training(trained, options)}
    return {
        "settings": {
            "subset": "test split, seed s draws its own subset without replacement",
            "k_draws_per_seed": DRAWS,
            "bn": BN_EVAL_MODE,
            "k_pool": "shape-preserving units (deletable in residual and plain nets alike)",
            "swaps": f"pairs of shape-preserving units of equal shape in the same stage: all, or {MAX_SWAPS} drawn by "
            f"seed {SWAP_SEED} where a net has more",
            "over_training": "median rise for one deleted unit at every kept snapshot, on the first seed's subset",
        },
        "trained": [r.describe() for r in runs],
        "budget": context.budget,
        "chance_error": 1 - 1 / runs[0].run.record.num_classes,
        "models": models,
    }


def _over_training(trained: TrainedRun, options: Options) -> dict[str, list[Any]]:
    def headline(run: Run) -> float | None:
        return median_single_rise(run.model, subset_batches(run, options.samples, 0), run.precision)

    return over_snapshots(trained, headline, f"lesion {trained.label} snapshots")


# -- judge -----------------------------------------------------------------------------------------------


def judge(numbers: dict[str, Any]) -> Verdict:
    models = numbers["models"]
    residual = {k: m for k, m in models.items() if m["residual"]}
    plain = {k: m for k, m in models.items() if m["plain"]}
    if not residual or not plain:
        return judged([], missing="the runs measured lack a residual net or a plain twin to contrast it with")
    chance = 100 * numbers["chance_error"]
    unlearned = [k for k, m in models.items() if number(m["baseline_error"]["mean"]) * 100 > UNLEARNED * chance]
    if unlearned:
        return judged(
            [], missing=f"{', '.join(unlearned)} did not learn (error within 10% of chance), so no lesion can show it"
        )
    r_name, r = next(iter(residual.items()))
    p_name, p = next(iter(plain.items()))
    rs, ps = r["by_seed"], p["by_seed"]
    single = "single_paper" if numbers.get("budget") == "paper" else "single"
    checks = [
        Check(
            "single",
            f"median rise of {r_name}'s error for one deleted unit",
            tuple(rs["single_rise_median"]),
            _t(single),
        ),
        Check(
            "relative",
            f"{r_name}'s mean rise for one deleted unit over {p_name}'s",
            _paired(rs["single_rise"], ps["single_rise"], lambda a, b: a / b if b else None),
            _t("relative"),
        ),
        Check(
            "smooth",
            f"largest step of {r_name}'s k-deletion curve minus {p_name}'s",
            _paired(rs["k_largest_step"], ps["k_largest_step"], lambda a, b: a - b),
            _t("smooth"),
        ),
        Check(
            "swaps",
            f"{r_name}'s mean rise for one swap minus {p_name}'s",
            _paired(rs["swap_rise"], ps["swap_rise"], lambda a, b: a - b),
            _t("swaps"),
        ),
    ]
    found = (
        f"baseline errors {100 * number(r['baseline_error']['mean']):.1f}% ({r_name}) and "
        f"{100 * number(p['baseline_error']['mean']):.1f}% ({p_name})"
    )
    down = number(r["downsampling_increase"]["mean"])
    if math.isfinite(down):
        found += f"; deleting a downsampling unit of {r_name} costs {100 * down:.1f} points"
    trajectory = r["over_training"]
    quantity = "median rise for one deleted unit (points)"
    moving = {
        r_name: settling(trajectory["steps"], trajectory["values"], quantity=quantity, threshold=_t(single).value)
    }
    return judged(checks, found=found, settling=moving, trained=numbers.get("trained", ()))


def _t(key: str) -> Threshold:
    return THRESHOLDS[key]


def _paired(a: Sequence[float | None], b: Sequence[float | None], how: Any) -> tuple[float | None, ...]:
    """``how(a_s, b_s)`` for each seed s where both were measured (the subsets of seed s are drawn alike)."""
    return tuple(None if x is None or y is None else how(x, y) for x, y in zip(a, b))


# -- render ----------------------------------------------------------------------------------------------


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    return _table(numbers["models"], numbers["chance_error"]), _figures(numbers, out)


def _pct(stats: dict[str, Any] | None) -> str:
    if stats is None or not stats.get("n"):
        return "–"
    return f"{100 * number(stats['mean']):.1f} ± {100 * number(stats['std']):.1f}"


def _table(measured: dict[str, dict[str, Any]], chance: float) -> str:
    rows = [
        (
            "| model | baseline error % | +% one unit deleted (median) | +% downsampling unit "
            "| not deletable | +% k=1 / k=N/2 / k=N deleted | +% one swap |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in measured.items():
        curve = m["k_deleted"]
        mids = [curve[0], curve[(len(curve) - 1) // 2], curve[-1]] if curve else []
        swap = spread(s["increase"]["mean"] for s in m["swaps"])
        median = number(m["single_increase_median"])
        rows.append(
            f"| {label} | {_pct(m['baseline_error'])} | {_pct(m['single_increase'])} "
            f"({100 * median:.1f}) | {_pct(m['downsampling_increase'])}"
            f" | {', '.join(m['not_deletable']) or 'none'} | "
            + " / ".join(f"{100 * number(c['increase']):.1f} (k={c['k']})" for c in mids)
            + f" | {_pct(swap)} |"
        )
    rows += [
        "",
        (
            f"Chance error: {100 * chance:.1f} %. Increases are in percentage points over the baseline: per unit "
            "(or swap) the mean over seeds, then mean ± std over the shape-preserving units (or swaps); k columns: "
            "mean over draws."
        ),
    ]
    rows += over_training_rows(measured, "median rise for one deleted unit (points)", ".1f")
    rows += ["", "| model | unit | stage | downsampling | error % deleted |", "|---|---|---|---|---|"]
    for label, m in measured.items():
        for u in m["units"]:
            error = _pct(u["error"]) if u["deletable"] else "cannot delete (changes shape, no shortcut)"
            rows.append(f"| {label} | {u['name']} | {u['stage']} | {'yes' if u['downsampling'] else ''} | {error} |")
    return "\n".join(rows)


def _figures(numbers: dict[str, Any], out: Path) -> list[Path]:
    measured, chance, training = numbers["models"], numbers["chance_error"], trained_for(numbers["trained"])
    figures = []
    fig, ax = new_figure(8.4, 4.4)
    for label, m in measured.items():
        (line,) = ax.plot([], [], label=f"{label} (baseline dashed)")
        color = line.get_color()
        ax.axhline(100 * number(m["baseline_error"]["mean"]), color=color, ls="--", lw=0.8)
        for u in m["units"]:
            if u["deletable"]:
                ax.errorbar(
                    u["index"],
                    100 * number(u["error"]["mean"]),
                    yerr=100 * number(u["error"]["std"]),
                    color=color,
                    marker="s" if u["downsampling"] else "o",
                    ms=7 if u["downsampling"] else 5,
                    capsize=2,
                )
            else:
                ax.plot(u["index"], 100 * chance, color=color, marker="x", ms=8)
    ax.plot([], [], "ks", label="downsampling unit")
    ax.plot([], [], "kx", label="cannot delete (plotted at chance)")
    ax.axhline(100 * chance, color="grey", ls=":", lw=0.8, label="chance")
    ax.set(xlabel="deleted unit (index in forward order)", ylabel="test error (%)")
    legend_outside(ax)
    titled(fig, "Test error after deleting one unit (Veit et al. 2016, Fig. 3)", training)
    figures.append(save_figure(fig, out, f"{NAME}-units"))

    fig, ax = new_figure(7.6, 4.2)
    for label, m in measured.items():
        ks = [0] + [c["k"] for c in m["k_deleted"]]
        mean = [number(m["baseline_error"]["mean"])] + [number(c["error"]["mean"]) for c in m["k_deleted"]]
        std = [number(m["baseline_error"]["std"])] + [number(c["error"]["std"]) for c in m["k_deleted"]]
        ax.errorbar(ks, [100 * v for v in mean], yerr=[100 * v for v in std], marker="o", capsize=2, label=label)
    ax.axhline(100 * chance, color="grey", ls=":", lw=0.8, label="chance")
    ax.set(xlabel="number of deleted shape-preserving units k", ylabel="test error (%), mean ± std over draws")
    legend_outside(ax)
    titled(fig, "Test error after deleting k random units (Veit et al. 2016, Fig. 5a)", training)
    figures.append(save_figure(fig, out, f"{NAME}-k"))

    fig, ax = new_figure(7.6, 4.2)
    width = 0.8 / max(1, len(measured))
    for n, (label, m) in enumerate(measured.items()):
        xs = [i + n * width for i in range(len(m["swaps"]))]
        ax.bar(
            xs,
            [100 * number(s["increase"]["mean"]) for s in m["swaps"]],
            width,
            yerr=[100 * number(s["increase"]["std"]) for s in m["swaps"]],
            capsize=2,
            label=label,
        )
    first = next(iter(measured.values()))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(first["swaps"]))])
    ax.set_xticklabels([f"{s['a']}↔{s['b']}" for s in first["swaps"]], rotation=30, fontsize=7)
    ax.set(xlabel="swapped pair of units (same stage)", ylabel="error increase (percentage points)")
    legend_outside(ax)
    titled(fig, "Test error after swapping two units of a stage", training)
    figures.append(save_figure(fig, out, f"{NAME}-swaps"))
    return figures
