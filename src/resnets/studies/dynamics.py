"""``resnets study dynamics``: how a residual network's units and paths change over training.

Veit, Wilber & Belongie 2016 read a trained ResNet as an ensemble of paths, most of its gradient carried by short
ones. Read over training, that ensemble is dynamic (Littwin & Wolf 2016, "The Loss Surface of Residual Networks:
Ensembles and the Role of Batch Normalization"): a unit whose branch F(x) is small next to its shortcut is
nearly skipped, so a net whose branches start small uses few layers at first and brings the skipped ones in as
their branches grow. In a BN ResNet the branch's size is set by the scale (gamma) of the branch's last
normalisation layer, which is why zero-initialising it (Goyal et al. 2017) starts a ResNet as a shallow net,
and why De & Smith 2020 ("Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
Networks") find BN keeps deep ResNets trainable by keeping their branches small next to the skip at first.

Over a run's weight snapshots (``resnets train --snapshot-every N`` keeps them; the default short runs keep 9),
this instrument measures, on a fixed batch of test images in eval mode:

- each unit's branch-to-shortcut ratio ||s * F(x)|| / ||shortcut(x)|| (root mean squares over the batch; s the
  residual scale), the share of the unit's output that is its own contribution;
- each unit's BN scale magnitude: the mean |gamma| of the last normalisation layer of its branch (modules of the
  shortcut excluded);
- the effective path-length distribution: the share of the gradient that paths of each length carry and its
  gradient-weighted mean length (the ``paths`` instrument, at each snapshot).

Heat maps show unit against training step; the verdict says whether the effective path length and the branch
ratios grew from the first snapshot to the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.models.base import BlockInfo, capture_units
from resnets.runs import Run
from resnets.studies import paths
from resnets.studies.common import BN_EVAL_MODE, number, spread, subset_batches
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.figures import new_figure, save_figure, titled, trained_for
from resnets.studies.trained import TrainedRun, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "dynamics"
CLAIM = (
    "A residual network is a dynamic ensemble: early in training it relies on short paths, its branches small "
    "next to its shortcuts, and as training goes on the branches grow and the gradient-weighted path length "
    "increases, bringing the nearly skipped layers back in; the branches' size is governed by the scale of their "
    "last BN layer (Littwin & Wolf 2016, 'The Loss Surface of Residual Networks: Ensembles and the Role of Batch "
    "Normalization', arXiv:1611.02525; after Veit, Wilber & Belongie 2016, 'Residual Networks Behave Like "
    "Ensembles of Relatively Shallow Networks'; De & Smith 2020, 'Batch Normalization Biases Residual Blocks "
    "Towards the Identity Function in Deep Networks')."
)
THRESHOLDS = {
    "deeper": Threshold(
        0.0,
        above=True,
        unit="units",
        paper="Littwin & Wolf (abstract): the ensembles are dynamic, 'while initially the virtual ensemble is "
        "mostly at depths lower than half the network's depth, as training progresses, it becomes deeper and "
        "deeper', driven by the scaling that e.g. BN introduces; no number. A trained ResNet-110 gets almost "
        "all of its gradient from paths 5-17 modules long (Veit et al. 2016, Sec. 5, Fig. 6)",
        source="Littwin & Wolf 2016, abstract; Veit, Wilber & Belongie 2016, Sec. 5, Fig. 6",
        why="our line: the gradient-weighted path length at the last snapshot minus at the first above 0, per "
        "path batch",
    ),
    "branches_grow": Threshold(
        0.0,
        above=True,
        unit="",
        paper="De & Smith (abstract): at initialisation 'batch normalization downscales the residual branch "
        "relative to the skip connection, by a normalizing factor on the order of the square root of the "
        "network depth', so a deep normalised ResNet starts close to the identity; that the branches then grow "
        "is not theirs: Littwin & Wolf name BN's scaling as what deepens the ensemble; no number",
        source="De & Smith 2020, abstract and Sec. 2-3; Littwin & Wolf 2016, abstract",
        why="our line: the mean branch/shortcut ratio at the last snapshot minus at the first above 0",
    ),
}
PATH_SAMPLES = 32  # training images per path-gradient batch, as in the paths instrument
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(256, "test images for the branch/shortcut ratios")
    seeds: int = option(2, "path-gradient batches per snapshot")


def branch_norm(info: BlockInfo) -> nn.Module | None:
    """The last affine normalisation layer of the unit's branch (None where the branch has none)."""
    shortcut = getattr(info.unit, "downsample", None)
    excluded = {id(m) for m in shortcut.modules()} if isinstance(shortcut, nn.Module) else set()
    found = [
        m
        for m in info.unit.modules()
        if isinstance(m, NORMS) and id(m) not in excluded and getattr(m, "weight", None) is not None
    ]
    return found[-1] if found else None


def unit_statistics(run: Run, batches: list) -> dict[str, list[float]]:
    """Per unit: branch-to-shortcut ratio (RMS norms over ``batches``) and the branch's BN |gamma| mean."""
    model, blocks = run.model, run.model.residual_blocks()
    model.eval()
    branch_sq = [0.0] * len(blocks)
    short_sq = [0.0] * len(blocks)
    with torch.no_grad():
        for x, _ in batches:
            with capture_units(blocks) as seen, run.precision.autocast():
                model(x.to(run.device))
            for i, info in enumerate(blocks):
                captured = seen[info.index]
                scale = info.unit.residual_scale
                branch_sq[i] += float((scale * captured.branch.float()).pow(2).sum())
                if captured.shortcut is not None:
                    short_sq[i] += float(captured.shortcut.float().pow(2).sum())
    ratios = [math.sqrt(b / s) if s > 0 else math.nan for b, s in zip(branch_sq, short_sq)]
    gammas = []
    for info in blocks:
        norm = branch_norm(info)
        gammas.append(float(norm.weight.detach().abs().mean()) if norm is not None else math.nan)
    return {"ratio": ratios, "bn_scale": gammas}


def measure_run(trained: TrainedRun, options: Options, context: Context) -> dict[str, Any]:
    """Every snapshot of ``trained``: unit statistics and the path-length gradient distribution."""
    run = trained.run
    steps = trained.snapshots
    if len(steps) < 2:
        raise ConfigError(
            f"{run.path} kept {len(steps)} weight snapshot(s); train it with --snapshot-every N (epochs) so that "
            "its training can be followed"
        )
    if not all(info.has_shortcut for info in run.model.residual_blocks()):
        raise ConfigError(f"{run.record.model} has units without shortcuts; dynamics follows residual networks")
    batches = subset_batches(run, options.samples, 0)
    per_epoch = trained.steps_per_epoch
    snapshots = []
    for step in context.progress(steps, f"dynamics {trained.label}"):
        at = trained.at(step)
        stats = unit_statistics(at, batches)
        traced = paths.measure_run(
            at, batch=PATH_SAMPLES, seeds=options.seeds, context=context, label=trained.label, show=False
        )
        snapshots.append(
            {
                "step": step,
                "epoch": step / per_epoch if per_epoch else None,
                **stats,
                "gradient_share": traced["gradient_share"],
                "gradient_mean_length": traced["gradient_mean_length"],
                "gradient_mean_length_by_seed": traced["by_seed"]["mean_length"],
                "gradient_range": traced["gradient_range"],
            }
        )
    return {
        **trained.describe(),
        "units": len(run.model.residual_blocks()),
        "unit_names": [info.name for info in run.model.residual_blocks()],
        "snapshots": snapshots,
    }


def trend(first: list[float], last: list[float]) -> dict[str, float]:
    """Mean over units at the first and last snapshot, and the share of units whose value grew."""
    pairs = [(a, b) for a, b in zip(first, last) if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return {"first": math.nan, "last": math.nan, "grew": math.nan}
    return {
        "first": sum(a for a, _ in pairs) / len(pairs),
        "last": sum(b for _, b in pairs) / len(pairs),
        "grew": sum(b > a for a, b in pairs) / len(pairs),
    }


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Follow the snapshots of ``--run`` directories, or of the default run (resnet20, 9 snapshots)."""
    runs = trained_runs(NAME, options, context)
    measured = {trained.label: measure_run(trained, options, context) for trained in runs}
    trends = {}
    for label, m in measured.items():
        first, last = m["snapshots"][0], m["snapshots"][-1]
        trends[label] = {
            "ratio": trend(first["ratio"], last["ratio"]),
            "bn_scale": trend(first["bn_scale"], last["bn_scale"]),
            "gradient_mean_length": {
                "first": first["gradient_mean_length"],
                "last": last["gradient_mean_length"],
                "by_step": [s["gradient_mean_length"] for s in m["snapshots"]],
                "change_by_seed": [
                    b - a for a, b in zip(first["gradient_mean_length_by_seed"], last["gradient_mean_length_by_seed"])
                ],
            },
        }
    return {
        "settings": {
            "path_batch_size": PATH_SAMPLES,
            "bn": BN_EVAL_MODE,
            "ratio": "||s * F(x)|| / ||shortcut(x)||, root mean squares over the batch",
            "bn_scale": "mean |gamma| of the last normalisation layer of the branch (shortcut modules excluded)",
        },
        "trained": [r.describe() for r in runs],
        "runs": measured,
        "trends": trends,
    }


def judge(numbers: dict[str, Any]) -> Verdict:
    checks, parts, moving = [], [], {}
    for label, t in numbers["trends"].items():
        length, ratio, gamma = t["gradient_mean_length"], t["ratio"], t["bn_scale"]
        checks += [
            Check(
                "deeper",
                f"change of {label}'s gradient-weighted path length from the first snapshot to the last",
                tuple(length["change_by_seed"]),
                THRESHOLDS["deeper"],
            ),
            Check(
                "branches_grow",
                f"change of {label}'s mean branch/shortcut ratio",
                (_difference(ratio["first"], ratio["last"]),),
                THRESHOLDS["branches_grow"],
            ),
        ]
        parts.append(
            f"in {label} the gradient-weighted path length went from {number(length['first']):.2f} to "
            f"{number(length['last']):.2f} units, the mean branch/shortcut ratio from {number(ratio['first']):.2f} "
            f"to {number(ratio['last']):.2f} ({number(ratio['grew']):.0%} of units grew) and the branch BN scale "
            f"from {number(gamma['first']):.2f} to {number(gamma['last']):.2f}"
        )
        steps = [s["step"] for s in numbers["runs"][label]["snapshots"]]
        moving[label] = settling(steps, length["by_step"], quantity="gradient-weighted path length")
    return judged(checks, found="; ".join(parts), settling=moving, trained=numbers.get("trained", ()))


def _difference(first: float | None, last: float | None) -> float | None:
    return None if first is None or last is None else last - first


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    lines = [
        "| run | path length (first → last) | branch/shortcut (first → last) | units grown | BN scale (first → last) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, t in numbers["trends"].items():
        length, ratio, gamma = t["gradient_mean_length"], t["ratio"], t["bn_scale"]
        lines.append(
            f"| {label} | {number(length['first']):.2f} → {number(length['last']):.2f} | "
            f"{number(ratio['first']):.3f} → {number(ratio['last']):.3f} | {number(ratio['grew']):.0%} | "
            f"{number(gamma['first']):.3f} → {number(gamma['last']):.3f} |"
        )
    training = trained_for(numbers["trained"])
    figures = [_figure(m, label, out, training) for label, m in numbers["runs"].items()]
    return "\n".join(lines), figures


def _figure(m: dict[str, Any], label: str, out: Path, training: str) -> Path:
    """Heat maps of unit against step (ratio, BN scale), path-length share against step, and the mean length."""
    fig, axes = new_figure(16.0, 4.2, cols=4)
    steps = [s["step"] for s in m["snapshots"]]
    epochs = [s["epoch"] for s in m["snapshots"]]
    in_epochs = all(e is not None for e in epochs) and epochs[-1] >= 2  # runs kept with --snapshot-every
    ticks, axis = ([f"{e:.3g}" for e in epochs], "epoch") if in_epochs else ([str(s) for s in steps], "step")
    units = m["units"]
    extent = (-0.5, len(steps) - 0.5, units - 0.5, -0.5)
    for ax, key, title in (
        (axes[0][0], "ratio", "branch / shortcut"),
        (axes[0][1], "bn_scale", "branch BN |gamma|"),
    ):
        grid = torch.tensor([[number(v) for v in s[key]] for s in m["snapshots"]]).T  # (units, snapshots)
        image = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", extent=extent)
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set(xlabel=axis, ylabel="unit (input → output)", title=f"{title} ({label})")
        ax.set_xticks(range(len(steps)), ticks, rotation=60, fontsize=7)
    share = torch.tensor([s["gradient_share"] for s in m["snapshots"]]).T  # (lengths, snapshots)
    image = axes[0][2].imshow(
        share.numpy(), aspect="auto", origin="lower", cmap="magma", extent=(-0.5, len(steps) - 0.5, -0.5, units + 0.5)
    )
    fig.colorbar(image, ax=axes[0][2], fraction=0.046)
    axes[0][2].set(xlabel=axis, ylabel="path length k", title="share of the gradient by path length")
    axes[0][2].set_xticks(range(len(steps)), ticks, rotation=60, fontsize=7)
    mean_length = [s["gradient_mean_length"] for s in m["snapshots"]]
    ratio = [spread(s["ratio"])["mean"] for s in m["snapshots"]]
    mean_length = [number(v) for v in mean_length]
    ax = axes[0][3]
    ax.plot(steps, mean_length, "o-", color="tab:red", label="gradient-weighted path length")
    ax.set(xlabel="step", ylabel="units", title="effective depth over training")
    twin = ax.twinx()
    twin.plot(steps, ratio, "s--", color="tab:blue", label="mean branch/shortcut")
    twin.set_ylabel("branch / shortcut")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    titled(fig, f"How {label}'s units and paths change over training", training)
    return save_figure(fig, out, f"{NAME}-{label}")
