"""``resnets study dynamics``: how a residual network's units and paths change over training.

Veit, Wilber & Belongie 2016 read a trained ResNet as an ensemble of paths, most of its gradient carried by short
ones. Read over training, that ensemble is dynamic: a unit whose branch F(x) is small next to its shortcut is
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

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.models.base import BlockInfo, capture_units
from resnets.runs import Run
from resnets.studies import paths
from resnets.studies.common import (
    BN_EVAL_MODE,
    StudyOptions,
    StudyResult,
    new_figure,
    progress,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.trained import DEFAULT_STEPS, RESIDUAL, open_measured, trained_runs

NAME = "dynamics"
CLAIM = (
    "A residual network is a dynamic ensemble: early in training it relies on short paths, its branches small "
    "next to its shortcuts, and as training goes on the branches grow and the gradient-weighted path length "
    "increases, bringing the nearly skipped layers back in; the branches' size is governed by the scale of their "
    "last BN layer (Veit, Wilber & Belongie 2016, 'Residual Networks Behave Like Ensembles of Relatively Shallow "
    "Networks'; De & Smith 2020, 'Batch Normalization Biases Residual Blocks Towards the Identity Function in "
    "Deep Networks')."
)
SNAPSHOTS = 9  # snapshots of the default run, evenly spaced, step 0 included
SAMPLES = 256  # test images for the ratios
PATH_SAMPLES = 32  # training images per path-gradient batch, as in the paths instrument
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


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


def measure(run: Run, options: StudyOptions, label: str) -> dict[str, Any]:
    """Every snapshot of ``run``: unit statistics and the path-length gradient distribution."""
    steps = run.snapshots
    if len(steps) < 2:
        raise ConfigError(
            f"{run.path} kept {len(steps)} weight snapshot(s); train it with --snapshot-every N (epochs) so that "
            "its training can be followed"
        )
    if not all(info.has_shortcut for info in run.model.residual_blocks()):
        raise ConfigError(f"{run.record.model} has units without shortcuts; dynamics follows residual networks")
    batches = subset_batches(run, int(options.pick("samples", SAMPLES)), 0)
    path_options = replace(options, samples=PATH_SAMPLES, seeds=len(seeds(options, default=2)), quiet=True)
    summary = run.path / "summary.json" if run.path else None
    per_epoch = _steps_per_epoch(summary)
    snapshots = []
    for step in progress(steps, desc=f"dynamics {label}", quiet=options.quiet):
        at = open_measured(options, run.path, f"step-{step}")
        stats = unit_statistics(at, batches)
        traced = paths.measure_run(at, path_options, label)
        snapshots.append(
            {
                "step": step,
                "epoch": step / per_epoch if per_epoch else None,
                **stats,
                "gradient_share": traced["gradient_share"],
                "gradient_mean_length": traced["gradient_mean_length"],
                "gradient_range": traced["gradient_range"],
            }
        )
    return {
        "run": str(run.path),
        "model": run.record.model,
        "units": len(run.model.residual_blocks()),
        "unit_names": [info.name for info in run.model.residual_blocks()],
        "snapshots": snapshots,
    }


def _steps_per_epoch(summary: Path | None) -> float | None:

    if summary is None or not summary.exists():
        return None
    data = json.loads(summary.read_text())
    return data["steps"] / data["epochs"] if data.get("epochs") else None


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


def run(options: StudyOptions) -> StudyResult:
    """Follow the snapshots of ``--run`` directories, or of a short default run of ``--model`` (resnet20).

    Reads ``runs`` or ``models``, ``steps`` (400), ``samples`` (test images for the ratios, 256) and ``seeds``
    (path-gradient batches per snapshot, 2).
    """
    steps = int(options.pick("steps", DEFAULT_STEPS))
    runs = trained_runs(options, options.pick("models", (RESIDUAL,)), steps=steps, snapshots=SNAPSHOTS)
    measured = {}
    for run_ in runs:
        label = run_.record.model if run_.record.model not in measured else f"{run_.record.model}#{len(measured)}"
        measured[label] = measure(run_, options, label)
    numbers: dict[str, Any] = {"runs": measured, "trends": {}}
    figures = []
    for label, m in measured.items():
        first, last = m["snapshots"][0], m["snapshots"][-1]
        numbers["trends"][label] = {
            "ratio": trend(first["ratio"], last["ratio"]),
            "bn_scale": trend(first["bn_scale"], last["bn_scale"]),
            "gradient_mean_length": {
                "first": first["gradient_mean_length"],
                "last": last["gradient_mean_length"],
                "by_step": [s["gradient_mean_length"] for s in m["snapshots"]],
            },
        }
        figures.append(_figure(m, label, options.out))
    deeper = [
        t["gradient_mean_length"]["last"] > t["gradient_mean_length"]["first"] for t in numbers["trends"].values()
    ]
    grew = [t["ratio"]["last"] > t["ratio"]["first"] for t in numbers["trends"].values()]
    supported = all(deeper) and all(grew)
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=_verdict(numbers["trends"], supported),
        supported=supported,
        settings={
            "runs": [m["run"] for m in measured.values()],
            "snapshots": {k: [s["step"] for s in m["snapshots"]] for k, m in measured.items()},
            "ratio_samples": int(options.pick("samples", SAMPLES)),
            "path_batches": len(seeds(options, default=2)),
            "path_batch_size": PATH_SAMPLES,
            "bn": BN_EVAL_MODE,
            "ratio": "||s * F(x)|| / ||shortcut(x)||, root mean squares over the batch",
            "bn_scale": "mean |gamma| of the last normalisation layer of the branch (shortcut modules excluded)",
            "default_runs": f"short runs of {steps} steps ({SNAPSHOTS} snapshots) unless --run is given",
        },
        numbers=numbers,
        table=_table(numbers["trends"]),
        figures=figures,
    )


def _verdict(trends: dict[str, Any], supported: bool) -> str:
    parts = []
    for label, t in trends.items():
        length, ratio, gamma = t["gradient_mean_length"], t["ratio"], t["bn_scale"]
        parts.append(
            f"in {label} the gradient-weighted path length went from {length['first']:.2f} to {length['last']:.2f} "
            f"units, the mean branch/shortcut ratio from {ratio['first']:.2f} to {ratio['last']:.2f} "
            f"({ratio['grew']:.0%} of units grew) and the branch BN scale from {gamma['first']:.2f} to "
            f"{gamma['last']:.2f}"
        )
    head = "The ensemble deepened over training: " if supported else "The ensemble did not clearly deepen: "
    return head + "; ".join(parts) + "."


def _table(trends: dict[str, Any]) -> str:
    lines = [
        "| run | path length (first → last) | branch/shortcut (first → last) | units grown | BN scale (first → last) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, t in trends.items():
        length, ratio, gamma = t["gradient_mean_length"], t["ratio"], t["bn_scale"]
        lines.append(
            f"| {label} | {length['first']:.2f} → {length['last']:.2f} | {ratio['first']:.3f} → {ratio['last']:.3f} | "
            f"{ratio['grew']:.0%} | {gamma['first']:.3f} → {gamma['last']:.3f} |"
        )
    return "\n".join(lines)


def _figure(m: dict[str, Any], label: str, out: str) -> Path:
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
        grid = torch.tensor([s[key] for s in m["snapshots"]]).T  # (units, snapshots)
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
    ax = axes[0][3]
    ax.plot(steps, mean_length, "o-", color="tab:red", label="gradient-weighted path length")
    ax.set(xlabel="step", ylabel="units", title="effective depth over training")
    twin = ax.twinx()
    twin.plot(steps, ratio, "s--", color="tab:blue", label="mean branch/shortcut")
    twin.set_ylabel("branch / shortcut")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out, f"{NAME}-{label}")
