"""Lesion study: delete, k-delete and swap the units of trained nets (Veit, Wilber & Belongie 2016).

Veit et al. ("Residual Networks Behave Like Ensembles of Relatively Shallow Networks", NeurIPS 2016) read a
ResNet as a collection of paths of many lengths: deleting one unit removes only half of the paths, so the test
error barely moves, except at the downsampling units, whose shortcut is not the identity; a plain (VGG-like)
net has one path, and deleting any layer breaks it. Error grows smoothly with the number of deleted units, and
swapping units hurts gracefully. Measured here on a seeded subset of the test split, for each trained run:

* ``units``: the error with each unit deleted in turn (``BlockInfo.lesioned``); downsampling units
  (``changes_shape``) are marked, and plain units that change shape cannot be deleted (reported as such);
* ``k_deleted``: the error with k random shape-preserving units deleted at once, k = 1..N (the N units every
  family can delete, so the residual net and its plain twin lose the same positions), a few draws per seed;
* ``swaps``: the error with two shape-preserving units of the same stage exchanged, for every such pair.

Swapping uses :func:`rearranged`, which puts unit modules at other units' positions through their parent
containers (found from ``BlockInfo.name`` with ``get_submodule``) and checks with taps that the forward pass
really ran them in the new order. :func:`subset_batches`, :func:`error_rate` and :func:`rearranged` are
shared with :mod:`resnets.studies.iterative`.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from contextlib import ExitStack
from itertools import combinations, pairwise
from typing import Any

from torch import nn

from resnets.device import Precision
from resnets.errors import LesionError
from resnets.models.base import BlockInfo
from resnets.runs import Run
from resnets.studies.common import (
    BN_EVAL_MODE,
    Batches,
    StudyOptions,
    StudyResult,
    error_rate,
    new_figure,
    progress,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.reorder import is_plain, is_residual, label_runs, rearranged
from resnets.studies.trained import DEFAULT_DATA, DEFAULT_STEPS, PLAIN, RESIDUAL, trained_runs

NAME = "lesion"
CLAIM = (
    "Deleting a single unit of a trained ResNet barely changes its test error, except at downsampling units, "
    "while deleting a layer of a plain (VGG-like) net destroys it; the error grows smoothly with the number of "
    "deleted units, and reordering units hurts gracefully (Veit, Wilber & Belongie 2016, 'Residual Networks "
    "Behave Like Ensembles of Relatively Shallow Networks')."
)
DEFAULT_SAMPLES = 500  # test images per seed (seed s draws its own subset)
DRAWS = 2  # random k-subsets per k and seed (all subsets where there are fewer)
BARELY = 0.05  # "barely changes": a median rise of at most 5 points (Veit et al. Fig. 3: ResNet-110, ~1-2 points)

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


def swap_pairs(blocks: Sequence[BlockInfo]) -> list[tuple[int, int]]:
    """Pairs of shape-preserving units of the same stage and equal shape: the units that can swap."""
    return [
        (a.index, b.index)
        for a, b in combinations(blocks, 2)
        if a.stage == b.stage and not a.changes_shape and not b.changes_shape and a.unit.io_shape == b.unit.io_shape
    ]


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


# -- the instrument --------------------------------------------------------------------------------------


def measure_run(run: Run, options: StudyOptions, samples: int, *, desc: str = "") -> dict[str, Any]:
    """Every lesion number of one run, each over the seeds' test subsets (and draws)."""
    model, precision = run.model.eval(), run.precision
    blocks = model.residual_blocks()
    pool = [b.index for b in blocks if not b.changes_shape]
    pairs = swap_pairs(blocks)
    base, singles, kdel, swaps = [], [], {}, []
    for seed in progress(seeds(options), desc=desc, quiet=options.quiet):
        batches = subset_batches(run, samples, seed)
        base.append(error_rate(model, batches, precision))
        singles.append(single_lesions(model, blocks, batches, precision))
        for k, errs in k_deletions(
            model, blocks, pool, batches, precision, draws=DRAWS, rng=random.Random(1000 + seed)
        ).items():
            kdel.setdefault(k, []).extend(errs)
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
    base_mean = spread(base)["mean"]
    return {
        "run": str(run.path or run.checkpoint),
        "checkpoint": run.checkpoint.name,
        "residual": is_residual(blocks),
        "plain": is_plain(blocks),
        "baseline_error": spread(base),
        "units": units,
        "single_increase": spread(u["increase"]["mean"] for u in kept),
        "single_increase_median": statistics.median(u["increase"]["mean"] for u in kept) if kept else math.nan,
        "downsampling_increase": spread(u["increase"]["mean"] for u in down),
        "not_deletable": [u["name"] for u in units if not u["deletable"]],
        "k_pool": [blocks[i].name for i in pool],
        "k_deleted": [{"k": k, "error": spread(v), "increase": spread(v)["mean"] - base_mean} for k, v in kdel.items()],
        "k_largest_step": _largest_step(base_mean, [spread(v)["mean"] for v in kdel.values()]),
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
    }


def _largest_step(start: float, curve: Sequence[float]) -> float:
    """The largest rise of the mean error from k-1 to k deleted units (k = 0 is the baseline)."""
    points = [start, *curve]
    return max((b - a for a, b in pairwise(points)), default=math.nan)


def run(options: StudyOptions) -> StudyResult:
    """Lesion the default residual net and its plain twin (or the given runs/models); see the module docstring."""
    steps = options.pick("steps", DEFAULT_STEPS)
    models = options.pick("models", (RESIDUAL, PLAIN))
    samples = options.pick("samples", DEFAULT_SAMPLES)
    runs = trained_runs(options, models, steps=steps)
    labels = label_runs(runs)
    chance = 1 - 1 / runs[0].record.num_classes
    measured = {label: measure_run(r, options, samples, desc=f"lesion {label}") for label, r in zip(labels, runs)}
    numbers = {"chance_error": chance, "models": measured}
    settings = {
        "runs": {label: m["run"] for label, m in measured.items()},
        "checkpoints": {label: m["checkpoint"] for label, m in measured.items()},
        "models": [r.record.model for r in runs],
        "data": runs[0].record.data.spec if runs[0].record.data else options.data or DEFAULT_DATA,
        "steps": None if options.runs else steps,
        "seeds": len(seeds(options)),
        "samples_per_seed": samples,
        "subset": "test split, seed s draws its own subset without replacement",
        "k_draws_per_seed": DRAWS,
        "bn": BN_EVAL_MODE,
        "precision": {lb: _precision(r) for lb, r in zip(labels, runs)},
        "k_pool": "shape-preserving units (deletable in residual and plain nets alike)",
        "swaps": "every pair of shape-preserving units of equal shape in the same stage",
        "training_seed": [r.record.seed for r in runs],
    }
    figures = _figures(measured, chance, options.out)
    verdict, supported = _verdict(measured, runs[0].record.num_classes)
    return StudyResult(NAME, CLAIM, verdict, supported, settings, numbers, _table(measured, chance), figures)


def _precision(run: Run) -> str:
    p = run.precision
    return f"autocast {str(p.dtype).removeprefix('torch.')}" if p.amp else "float32"


def _verdict(measured: dict[str, dict[str, Any]], num_classes: int) -> tuple[str, bool | None]:
    residual = {k: m for k, m in measured.items() if m["residual"]}
    plain = {k: m for k, m in measured.items() if m["plain"]}
    if not residual or not plain:
        text = "The runs measured lack a residual net or a plain twin to contrast it with, so the claim cannot be "
        return text + "judged from them (see the numbers for each).", None
    chance = 1 - 1 / num_classes
    unlearned = [k for k, m in measured.items() if m["baseline_error"]["mean"] > 0.9 * chance]
    if unlearned:
        return (
            f"{', '.join(unlearned)} did not learn (error within 10% of chance), so deleting units cannot show "
            "anything and the claim cannot be judged from these runs."
        ), None
    r_name, r = next(iter(residual.items()))
    p_name, p = next(iter(plain.items()))
    r_inc, p_inc, r_median = r["single_increase"]["mean"], p["single_increase"]["mean"], r["single_increase_median"]
    r_down = r["downsampling_increase"]["mean"]
    r_step, p_step = r["k_largest_step"], p["k_largest_step"]
    r_swap = spread(s["increase"]["mean"] for s in r["swaps"])["mean"]
    p_swap = spread(s["increase"]["mean"] for s in p["swaps"])["mean"]
    failed = [
        text
        for text, ok in (
            (f"a single deletion is not harmless (median rise above {100 * BARELY:.0f} points)", r_median <= BARELY),
            (f"{r_name} does not lose less than half of what {p_name} loses", r_inc < 0.5 * p_inc),
            ("its error does not rise in smaller steps as units are deleted", r_step < p_step),
            ("swaps do not hurt it less", r_swap < p_swap),
        )
        if not ok
    ]
    down = f", downsampling units {100 * r_down:.1f}" if math.isfinite(r_down) else ""
    sentence = (
        f"Deleting one unit raised {r_name}'s error by {100 * r_inc:.1f} points on average (median "
        f"{100 * r_median:.1f}{down}) against {100 * p_inc:.1f} for {p_name}, deleting one more unit raised it by "
        f"at most {100 * r_step:.1f} points against {100 * p_step:.1f}, and a swap cost {100 * r_swap:.1f} against "
        f"{100 * p_swap:.1f}: "
    )
    if not failed:
        return sentence + "the numbers support the claim.", True
    return sentence + f"{'; '.join(failed)}, so the numbers do not support the claim as stated.", False


def _table(measured: dict[str, dict[str, Any]], chance: float) -> str:
    def pct(stats: dict[str, float] | None) -> str:
        if stats is None or not stats.get("n"):
            return "–"
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"

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
        rows.append(
            f"| {label} | {pct(m['baseline_error'])} | {pct(m['single_increase'])} "
            f"({100 * m['single_increase_median']:.1f}) | {pct(m['downsampling_increase'])}"
            f" | {', '.join(m['not_deletable']) or 'none'} | "
            + " / ".join(f"{100 * c['increase']:.1f} (k={c['k']})" for c in mids)
            + f" | {pct(swap)} |"
        )
    rows += [
        "",
        (
            f"Chance error: {100 * chance:.1f} %. Increases are in percentage points over the baseline: per unit "
            "(or swap) the mean over seeds, then mean ± std over the shape-preserving units (or swaps); k columns: "
            "mean over draws."
        ),
    ]
    rows += ["", "| model | unit | stage | downsampling | error % deleted |", "|---|---|---|---|---|"]
    for label, m in measured.items():
        for u in m["units"]:
            error = pct(u["error"]) if u["deletable"] else "cannot delete (changes shape, no shortcut)"
            rows.append(f"| {label} | {u['name']} | {u['stage']} | {'yes' if u['downsampling'] else ''} | {error} |")
    return "\n".join(rows)


def _figures(measured: dict[str, dict[str, Any]], chance: float, out: str) -> list:
    figures = []
    fig, ax = new_figure(7.2, 4.2)
    for label, m in measured.items():
        (line,) = ax.plot([], [], label=f"{label} (baseline dashed)")
        color = line.get_color()
        ax.axhline(100 * m["baseline_error"]["mean"], color=color, ls="--", lw=0.8)
        for u in m["units"]:
            if u["deletable"]:
                ax.errorbar(
                    u["index"],
                    100 * u["error"]["mean"],
                    yerr=100 * u["error"]["std"],
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
    ax.set_xlabel("deleted unit (index in forward order)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Error after deleting one unit")
    ax.legend(fontsize=8)
    figures.append(save_figure(fig, out, f"{NAME}-units"))

    fig, ax = new_figure()
    for label, m in measured.items():
        ks = [0] + [c["k"] for c in m["k_deleted"]]
        mean = [m["baseline_error"]["mean"]] + [c["error"]["mean"] for c in m["k_deleted"]]
        std = [m["baseline_error"]["std"]] + [c["error"]["std"] for c in m["k_deleted"]]
        ax.errorbar(ks, [100 * v for v in mean], yerr=[100 * v for v in std], marker="o", capsize=2, label=label)
    ax.axhline(100 * chance, color="grey", ls=":", lw=0.8, label="chance")
    ax.set_xlabel("number of deleted shape-preserving units k")
    ax.set_ylabel("test error (%), mean ± std over draws")
    ax.set_title("Error after deleting k random units")
    ax.legend(fontsize=8)
    figures.append(save_figure(fig, out, f"{NAME}-k"))

    fig, ax = new_figure()
    width = 0.8 / max(1, len(measured))
    for n, (label, m) in enumerate(measured.items()):
        xs = [i + n * width for i in range(len(m["swaps"]))]
        ax.bar(
            xs,
            [100 * s["increase"]["mean"] for s in m["swaps"]],
            width,
            yerr=[100 * s["increase"]["std"] for s in m["swaps"]],
            capsize=2,
            label=label,
        )
    first = next(iter(measured.values()))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(first["swaps"]))])
    ax.set_xticklabels([f"{s['a']}↔{s['b']}" for s in first["swaps"]], rotation=30, fontsize=7)
    ax.set_xlabel("swapped pair of units (same stage)")
    ax.set_ylabel("error increase (percentage points)")
    ax.set_title("Error after swapping two units")
    ax.legend(fontsize=8)
    figures.append(save_figure(fig, out, f"{NAME}-swaps"))
    return figures
