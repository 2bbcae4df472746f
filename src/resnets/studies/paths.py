"""``resnets study paths``: how many paths of each length a residual network has, and which lengths carry its
gradient (Veit, Wilber & Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks", Sec. 5 and Fig. 6).

Unrolled, a net of n residual units y_i = post(F_i(x_i) + s_i(x_i)) is a sum of 2^n paths: each path takes the
branch F_i or the shortcut s_i at every unit, and its length is the number of branches it takes, so C(n, k)
paths have length k (a binomial distribution). The backward pass expands the same way: the Jacobian of the
trunk is prod_i P_i (J_Fi + J_si), with P_i the Jacobian of ``post`` at the unit's actual sum, and the gradient
that flows through one path S (a set of units) is that product with J_Fi taken for i in S and J_si elsewhere.

As in the paper, the forward pass runs through the whole trained net and only the backward pass is restricted to
one path: we record each unit's input, branch F(x) and shortcut s(x) (a tap of the unit interface) in one
forward pass, then walk back unit by unit with vector-Jacobian products through ``post`` and through the branch
(units in S) or the shortcut (the others), to the input of the first unit. The norm of that gradient, averaged
over sampled sets S of each size k and over batches, is the gradient magnitude of one path of length k; times
C(n, k) it is the total gradient that paths of length k carry (Fig. 6c). The 2^n path gradients sum exactly to
the ordinary gradient, which the tests check. A unit with several branches (a multi-residual block) counts as
one branch: its branches' paths are grouped. In a trained ResNet-110 (54 units), 98% of whose paths are 19 to 35
units long (the binomial), the paper found almost all of the gradient coming from paths 5 to 17 units long.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.errors import ConfigError
from resnets.models.base import BlockInfo
from resnets.runs import Run
from resnets.studies.common import BN_EVAL_MODE, first_batches, number, over_training_rows, spread
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.trained import over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "paths"
CLAIM = (
    "A residual network with n units is an ensemble of 2^n paths whose lengths follow a binomial distribution, "
    "and the gradient of one path shrinks exponentially with its length, so that the gradient comes mostly from "
    "paths much shorter than the typical path: in a trained ResNet-110 (54 units) 98% of the paths are 19-35 units "
    "long (the binomial), but almost all of the gradient flows through paths 5-17 units long, 0.45% of the paths "
    "(Veit, Wilber & Belongie 2016, abstract: 'paths that are only 10-34 layers deep'; Sec. 5, Fig. 6)."
)
VEIT = "Veit, Wilber & Belongie 2016"
SETS_PER_K = 12  # sampled paths per length and batch; lengths with fewer paths than this are enumerated
SHARE = 0.9  # the effective range holds this share of the total gradient (and of the paths)
THRESHOLDS = {
    "decay": Threshold(
        1.0,
        above=False,
        unit="x per unit",
        paper="the gradient of one path 'appears to decay roughly exponentially with the number of modules the "
        "gradient passes through' (Fig. 6 caption); read off the log-scale inset of Fig. 6(b): from about "
        "1e-6 at length 0 to about 1e-26 at 33 modules, a factor of about 0.25 per module",
        source=f"{VEIT}, Sec. 5, Fig. 6(b)",
        why="our line: the per-unit factor of a least-squares fit of log(gradient of one path) on its length "
        "below 1, i.e. any decay",
    ),
    "shorter": Threshold(
        0.8,
        above=False,
        unit="x",
        paper="'almost all of the gradient updates during training come from paths between 5 and 17 modules "
        "long' while the path lengths centre on 27 (Fig. 6a, binomial); read off Fig. 6(c): the total "
        "gradient peaks at 9-13 modules and is negligible beyond about 20, a gradient-weighted mean length of "
        "roughly 11, about 0.4 of the mean path length",
        source=f"{VEIT}, Sec. 5, Fig. 6(a, c)",
        why="our line: the gradient-weighted mean path length over the mean path length n/2 below 0.8, "
        "leaving room for a net of few units, whose binomial is narrow",
    ),
}


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(32, "training images per batch (one batch per seed), as in the paper")
    seeds: int = option(3, "batches, each its own share of the training split")


def path_length_counts(n: int) -> list[int]:
    """Paths of each length k = 0..n through n units that each offer a branch and a shortcut: C(n, k)."""
    return [math.comb(n, k) for k in range(n + 1)]


def shortest_range(weights: Sequence[float], share: float = SHARE) -> tuple[int, int]:
    """The shortest interval [a, b] of lengths holding at least ``share`` of the total weight (the heavier of
    equally short ones)."""
    total = float(sum(weights))
    if not total > 0:
        raise ValueError(f"weights must have a positive sum, got {list(weights)}")
    best: tuple[int, float, int, int] | None = None
    for a in range(len(weights)):
        held = 0.0
        for b in range(a, len(weights)):
            held += weights[b]
            if held >= share * total * (1 - 1e-12):
                key = (b - a, -held, a, b)
                if best is None or key[:2] < best[:2]:
                    best = key
                break
    assert best is not None
    return best[2], best[3]


@dataclass
class _Unit:
    """One unit's tensors from the recorded forward pass (all still in the autograd graph)."""

    x: torch.Tensor  # unit input
    branch: torch.Tensor  # F(x), before the residual scale
    shortcut: torch.Tensor  # s(x)
    y: torch.Tensor  # unit output, post(scale * F(x) + s(x))
    scale: float
    z: torch.Tensor | None = None  # a detached leaf holding the sum, and post applied to it
    post_out: torch.Tensor | None = None


class PathTrace:
    """One forward pass through a net, recorded so that the gradient of any single path can be computed.

    ``path_gradient(S)`` is the gradient of the loss at the input of the first unit that flows through the
    branches of the units in ``S`` and the shortcuts of all others; ``full_gradient()`` the ordinary one.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        blocks: list[BlockInfo],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        autocast: AbstractContextManager | None = None,
    ) -> None:
        for info in blocks:
            if not info.has_shortcut:
                raise ConfigError(
                    f"unit {info.name!r} has no shortcut: a net of plain units has one path, so path lengths "
                    "mean nothing; use a residual net (resnet20, resnet110, preact_resnet110, highway_cifar19)"
                )
        records: list[dict[str, Any]] = [{} for _ in blocks]
        with ExitStack() as stack:
            for info, rec in zip(blocks, records):
                stack.enter_context(info.unit.tapped(_tap(rec)))
                for handle in (
                    info.module.register_forward_pre_hook(_pre_hook(rec, info.name)),
                    info.module.register_forward_hook(_out_hook(rec)),
                ):
                    stack.callback(handle.remove)
            with autocast if autocast is not None else nullcontext():
                logits = model(inputs.requires_grad_(True))
        self.loss = F.cross_entropy(logits.float(), targets)  # mean over the batch, as in training
        self.units = [
            _Unit(r["x"], r["branch"], r["shortcut"], r["y"], blocks[i].unit.residual_scale)
            for i, r in enumerate(records)
        ]
        for info, unit in zip(blocks, self.units):  # post's Jacobian at the unit's actual sum
            unit.z = (unit.scale * unit.branch + unit.shortcut).detach().requires_grad_(True)
            unit.post_out = info.unit.post(unit.z.clone())
            if not torch.allclose(unit.post_out.float(), unit.y.float(), rtol=1e-3, atol=1e-4):
                raise ConfigError(
                    f"unit {info.name!r} does not output post(scale * branch + shortcut) of its taps, so its "
                    "paths cannot be separated; it may apply dropout or stochastic depth (use eval mode)"
                )
        self.top = torch.autograd.grad(self.loss, self.units[-1].y, retain_graph=True)[0]
        self.n = len(self.units)

    def full_gradient(self) -> torch.Tensor:
        """The ordinary gradient of the loss at the first unit's input (the sum of all 2^n path gradients)."""
        return torch.autograd.grad(self.loss, self.units[0].x, retain_graph=True)[0].float()

    def path_gradient(self, active: frozenset[int] | set[int]) -> torch.Tensor:
        """The gradient at the first unit's input through the branches of the units in ``active`` only."""
        g = self.top
        for i in reversed(range(self.n)):
            unit = self.units[i]
            if i < self.n - 1:  # from the next unit's input back to this unit's output (often the same tensor)
                g = _vjp(self.units[i + 1].x, unit.y, g)
            g = _vjp(unit.post_out, unit.z, g)
            g = _vjp(unit.branch, unit.x, g) * unit.scale if i in active else _vjp(unit.shortcut, unit.x, g)
        return g.float()


def _tap(rec: dict[str, Any]) -> Any:
    def tap(branch: torch.Tensor, shortcut: torch.Tensor | None) -> None:
        rec["branch"], rec["shortcut"] = branch, shortcut

    return tap


def _pre_hook(rec: dict[str, Any], name: str) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not isinstance(args[0], torch.Tensor):
            raise ConfigError(
                f"unit {name!r} takes {type(args[0]).__name__}, not one tensor: its skips reach further back than "
                "its input (a multi-skip MLP), so its paths are not a chain of units; use a CIFAR ResNet, a "
                "pre-activation ResNet or a Highway net"
            )
        rec["x"] = args[0]

    return hook


def _out_hook(rec: dict[str, Any]) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        rec["y"] = output

    return hook


def _vjp(output: torch.Tensor, inputs: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """grad^T d(output)/d(inputs), keeping the graph for the next path; zero where output ignores inputs."""
    if output is inputs:
        return grad
    (result,) = torch.autograd.grad(output, inputs, grad.to(output.dtype), retain_graph=True, allow_unused=True)
    return torch.zeros_like(inputs) if result is None else result


def _sample_sets(n: int, k: int, count: int, rng: random.Random) -> list[frozenset[int]]:
    """``count`` distinct k-subsets of n units, or all of them where there are no more than ``count``."""
    if math.comb(n, k) <= count:
        return [frozenset(c) for c in itertools.combinations(range(n), k)]
    chosen: set[frozenset[int]] = set()
    while len(chosen) < count:
        chosen.add(frozenset(rng.sample(range(n), k)))
    return sorted(chosen, key=sorted)


def measure_run(run: Run, *, batch: int, seeds: int, context: Context, label: str, show: bool = True) -> dict[str, Any]:
    """Per-path gradient norms by length over ``seeds`` batches, and the totals and ranges derived from them."""
    model, blocks = run.model, run.model.residual_blocks()
    model.eval()
    draws = list(range(seeds))
    data = first_batches(run.loader("train"), batch * len(draws))
    inputs = torch.cat([x for x, _ in data])
    targets = torch.cat([y for _, y in data])
    n = len(blocks)
    per_seed: list[list[float]] = []  # [seed][k]: mean path-gradient norm over the sampled sets
    full_norms: list[float] = []
    for seed in context.progress(draws, f"paths {label}") if show else draws:
        rng = random.Random(seed)
        x = inputs[seed * batch : (seed + 1) * batch].clone()
        y = targets[seed * batch : (seed + 1) * batch]
        if len(y) == 0:
            raise ConfigError(f"the training split has fewer than {batch * len(draws)} samples; lower --samples")
        with torch.enable_grad():
            trace = PathTrace(model, blocks, x, y, run.precision.autocast())
            full_norms.append(float(trace.full_gradient().norm()))
            row = []
            for k in range(n + 1):
                norms = [float(trace.path_gradient(s).norm()) for s in _sample_sets(n, k, SETS_PER_K, rng)]
                row.append(sum(norms) / len(norms))
        per_seed.append(row)
        del trace
    if not any(full_norms):
        raise ConfigError(
            f"{run.path}: the loss has no gradient at these weights (a dead net: every path's gradient is 0), so "
            "gradient shares by path length are undefined; train it at a lower lr"
        )
    counts = path_length_counts(n)
    per_path = [spread(row[k] for row in per_seed) for k in range(n + 1)]
    summary = _lengths(counts, [s["mean"] for s in per_path])
    by_seed = [_lengths(counts, row) for row in per_seed]
    grad_range, path_range = shortest_range(summary["total"]), shortest_range(counts)
    return {
        "run": str(run.path),
        "model": run.record.model,
        "units": n,
        "unit_names": [info.name for info in blocks],
        "paths": 2**n,
        "path_counts": counts,
        "per_path_gradient": per_path,
        "per_path_gradient_by_seed": per_seed,
        "total_gradient": summary["total"],
        "gradient_share": summary["share"],
        "gradient_range": list(grad_range),
        "path_range": list(path_range),
        "path_range_95": list(shortest_range(counts, 0.95)),
        "mean_path_length": n / 2,
        "gradient_mean_length": summary["mean_length"],
        "length_ratio": summary["ratio"],
        "decay_per_unit": summary["decay"],
        "by_seed": {key: [s[key] for s in by_seed] for key in ("mean_length", "ratio", "decay")},
        "full_gradient_norm": spread(full_norms),
    }


def _lengths(counts: Sequence[int], mean_norm: Sequence[float]) -> dict[str, Any]:
    """From the mean gradient of one path of each length: the total per length, its shares, the
    gradient-weighted mean length, its ratio to n/2 and the per-unit decay of one path's gradient."""
    n = len(counts) - 1
    total = [c * m for c, m in zip(counts, mean_norm)]
    share = [t / sum(total) for t in total]
    lengths = [k for k in range(n + 1) if mean_norm[k] > 0]
    mean_length = sum(k * f for k, f in enumerate(share))
    return {
        "total": total,
        "share": share,
        "mean_length": mean_length,
        "ratio": mean_length / (n / 2) if n else math.nan,
        "decay": math.exp(_slope(lengths, [math.log(mean_norm[k]) for k in lengths])),
    }


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def measure(options: Options, context: Context) -> dict[str, Any]:
    runs = trained_runs(NAME, options, context)
    measured: dict[str, dict[str, Any]] = {}
    for trained in runs:
        found = measure_run(
            trained.run, batch=options.samples, seeds=options.seeds, context=context, label=trained.label
        )

        def ratio(run: Run) -> float:
            return measure_run(run, batch=options.samples, seeds=1, context=context, label="", show=False)[
                "length_ratio"
            ]

        over = over_snapshots(trained, ratio, f"paths {trained.label} snapshots")
        measured[trained.label] = {**trained.describe(), **found, "over_training": over}
    return {
        "settings": {
            "bn": BN_EVAL_MODE,
            "data": "training split, unaugmented, first batches in the loader's order (one batch per seed)",
            "sets_per_length": SETS_PER_K,
            "loss": "cross-entropy, mean over the batch",
            "gradient_at": "input of the first residual unit (the stem's output); forward through the whole net, "
            "backward through one path",
            "share": SHARE,
            "over_training": "the length ratio at every kept snapshot, on the first batch",
        },
        "trained": [r.describe() for r in runs],
        "runs": measured,
    }


def judge(numbers: dict[str, Any]) -> Verdict:
    checks, parts, moving = [], [], {}
    for label, m in numbers["runs"].items():
        checks += [
            Check(
                "decay",
                f"{label}'s gradient of one path, per unit of length",
                tuple(m["by_seed"]["decay"]),
                THRESHOLDS["decay"],
            ),
            Check(
                "shorter",
                f"{label}'s gradient-weighted mean path length over the mean path length",
                tuple(m["by_seed"]["ratio"]),
                THRESHOLDS["shorter"],
            ),
        ]
        parts.append(
            f"{SHARE:.0%} of {label}'s gradient comes from paths {m['gradient_range'][0]}-{m['gradient_range'][1]} "
            f"units long, {SHARE:.0%} of its {m['paths']} paths are {m['path_range'][0]}-{m['path_range'][1]} long"
        )
        over = m["over_training"]
        moving[label] = settling(
            over["steps"], over["values"], quantity="length ratio", threshold=THRESHOLDS["shorter"].value
        )
    small = [label for label, m in numbers["runs"].items() if m["units"] < 27]
    notes = (
        [f"{', '.join(small)} has fewer than 27 units (resnet56); the paper's claim is about 54 (ResNet-110)"]
        if small
        else []
    )
    return judged(checks, found="; ".join(parts), notes=notes, settling=moving, trained=numbers.get("trained", ()))


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    training = trained_for(numbers["trained"])
    figures = [_figure(m, label, out, training) for label, m in numbers["runs"].items()]
    return _table(numbers["runs"]), figures


def _figure(m: dict[str, Any], label: str, out: Path, training: str) -> Path:
    """Fig. 6 of the paper: (a) paths per length, (b) gradient of one path, (c) total gradient per length."""
    fig, axes = new_figure(15.0, 4.2, cols=3)
    ks = list(range(m["units"] + 1))
    a, b, c = axes[0]
    a.bar(ks, m["path_counts"], color="tab:gray", label=f"C({m['units']}, k)")
    a.set(xlabel="path length k (residual branches on the path)", ylabel="number of paths", title="(a) paths")
    mean = [number(s["mean"]) for s in m["per_path_gradient"]]
    std = [number(s["std"]) for s in m["per_path_gradient"]]
    b.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=f"decay {number(m['decay_per_unit']):.2f}/unit")
    b.set_yscale("log")
    b.set(xlabel="path length k", ylabel="gradient norm of one path", title="(b) gradient per path")
    c.bar(ks, m["gradient_share"], color="tab:blue", alpha=0.8, label="share of total gradient")
    c.plot(ks, [p / m["paths"] for p in m["path_counts"]], "k--", label="share of paths")
    lo, hi = m["gradient_range"]
    c.axvspan(lo - 0.5, hi + 0.5, color="tab:orange", alpha=0.2, label=f"{SHARE:.0%} of gradient: {lo}-{hi}")
    c.set(xlabel="path length k", ylabel="share", title="(c) total gradient per length")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    legend_outside(c)  # panel (c)'s bars peak where a legend inside would sit
    titled(fig, f"Paths of {label} by length and the gradient they carry (Veit et al. 2016, Fig. 6)", training)
    return save_figure(fig, out, f"{NAME}-{label}")


def _table(measured: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| run | units n | paths 2^n | 90% of paths: lengths | 90% of gradient: lengths "
        + "| mean length: paths / gradient (ratio) | decay of one path per unit |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in measured.items():
        lines.append(
            f"| {label} | {m['units']} | {m['paths']} | {m['path_range'][0]}-{m['path_range'][1]} | "
            f"{m['gradient_range'][0]}-{m['gradient_range'][1]} | {m['mean_path_length']:.1f} / "
            f"{number(m['gradient_mean_length']):.2f} ({number(m['length_ratio']):.2f}) | "
            f"{number(m['decay_per_unit']):.3f} |"
        )
    lines += over_training_rows(measured, "length ratio (gradient-weighted mean length / mean path length)", ".3f")
    for label, m in measured.items():
        lines += [
            "",
            f"Per length, {label} (gradient norm of one path: mean ± std over batches):",
            "",
            "| k | paths C(n,k) | gradient of one path | share of total gradient |",
            "|---|---|---|---|",
        ]
        for k, (count, s, share) in enumerate(zip(m["path_counts"], m["per_path_gradient"], m["gradient_share"])):
            lines.append(f"| {k} | {count} | {number(s['mean']):.3g} ± {number(s['std']):.2g} | {number(share):.3f} |")
    return "\n".join(lines)
