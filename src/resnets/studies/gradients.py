"""``resnets study gradients``: the gradient norm of every layer, plain vs residual vs Highway, over depth.

He et al. 2016 ("Identity Mappings in Deep Residual Networks", Sec. 2, eq. 5) write the gradient at a shallower unit
as dL/dx_l = dL/dx_L (1 + d/dx_l sum F): the term dL/dx_L reaches every unit unchanged through the identity
shortcuts, so the gradient of a shallow layer does not vanish however deep the net, while a plain net's
gradient is a product of one Jacobian per layer and shrinks or explodes with depth.

What is measured, per layer: ``||dL/dW||`` (the Frobenius norm) of every convolution and linear weight, in
the order the forward pass first uses them (stem first, classifier last, shortcut projections and Highway
gates where they run), for L = the mean cross-entropy of one batch against its labels. The headline is
``first/last``: the first layer's gradient norm over the last (classifier) layer's, against depth.

- At initialisation, over a depth sweep of each family (``create_at_depth``; a Highway net gets the nearest
  depth it can have, 3n+4), with BatchNorm on batch statistics (running statistics of a fresh net are unset)
  and everything else in eval mode (no dropout or drop path); one fresh net and one batch per seed.
- Along training, at the weight snapshots of the default runs (the 56-layer speedrun twins on the cpu budget,
  or ``--run``), with the same batch-statistics BN, i.e. the gradient an optimiser step would see, on training
  batches. The verdict is decided at initialisation, so training length cannot change it; the trained nets are
  reported beside He et al. 2015's observation that plain nets trained with BN keep healthy gradient norms.

Batches are real images of the study's data (Fashion-MNIST by default) with their labels; only where the
default data set is missing do random normal images with random labels stand in, which the JSON says.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.models import SkipNetwork, get_model_entry
from resnets.studies.common import first_batches, fmt, number, spread
from resnets.studies.contract import INTS, Context, TrainedOptions, option
from resnets.studies.figures import UNTRAINED, legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.trained import TrainedRun, trained_runs
from resnets.studies.untrained import BN_BATCH, StudyData, batch_statistics, build_near
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "gradients"
CLAIM = (
    "In a residual net the gradient of a shallower unit always receives the gradient of the deepest unit as a "
    "directly added term, so it does not vanish with depth, whereas at initialisation a batch-normalised plain "
    "net's gradient explodes with depth (He et al. 2016, 'Identity Mappings in Deep Residual Networks', Sec. 2, "
    "eq. 5; Yang et al. 2019, 'A Mean Field Theory of Batch Normalization'; trained with BN, plain nets keep "
    "healthy gradient norms, He et al. 2015, Sec. 4.1)."
)
THRESHOLDS = {
    "kept": Threshold(
        -1.0,
        above=True,
        unit="decades",
        paper="dL/dx_l = dL/dx_L (1 + d/dx_l sum F): 'the gradient of a layer does not vanish even when the weights "
        "are arbitrarily small', since the added term cannot be -1 for every sample of a mini-batch "
        "(an argument, no measured number)",
        source="He, Zhang, Ren & Sun 2016, 'Identity Mappings in Deep Residual Networks', Sec. 2, eq. (5)",
        why="our line, not the paper's: log10 of the first/last layer gradient-norm ratio at the deepest depth "
        "minus at the shallowest; above -1, it fell less than tenfold",
    ),
    "plain_moves_more": Threshold(
        0.0,
        above=True,
        unit="decades",
        paper="at initialisation, in batch-normalised nets without skip connections 'gradient signals grow "
        "exponentially in depth', BN itself being the cause, while 'after a single step of optimization' the "
        "gradients reach 'a relatively stable equilibrium' with a much smaller dynamic range (Yang et al. 2019, "
        "abstract); a shortcut keeps a directly added term (He et al. 2016, eq. 5). Trained plain nets with BN "
        "show 'healthy norms' (He et al. 2015, Sec. 4.1), so the claim holds at initialisation, not in training",
        source="Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, 'A Mean Field Theory of Batch "
        "Normalization', ICLR, abstract; He et al. 2016, Sec. 2, eq. (5); He, Zhang, Ren & Sun 2015, Sec. 4.1",
        why="our line: |drift of the plain net| minus the largest |drift| of a residual net, in decades over the "
        "sweep, at initialisation with batch-statistics BN (where Yang et al. predict the plain net's exponential "
        "drift); the trained nets, where He et al. 2015 found healthy norms, are reported, not judged",
    ),
}
#: The families swept over depth at initialisation: He et al.'s ResNet, its plain twin and a Highway net.
SWEPT = ("resnet20", "plain20", "highway_cifar19")
VANISHED = 1.0  # log10: the first/last ratio falling tenfold over the depth sweep counts as vanishing
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class Options(TrainedOptions):
    depths: tuple[int, ...] = option((20, 56, 110), "depth sweep in weighted layers (each family's nearest)", **INTS)
    samples: int = option(16, "images per batch (one batch per seed); BN uses their statistics")
    seeds: int = option(3, "fresh nets and batches per depth, and batches per trained snapshot")


def layer_gradient_norms(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, autocast: Any = None
) -> tuple[list[str], list[float]]:
    """(names, ||dL/dW||) of every conv and linear weight in the order the forward pass first calls them.

    L is the mean cross-entropy of ``inputs`` against ``targets``; ``.grad`` of the parameters is left alone.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []

    def seen(module: nn.Module, args: Any, output: Any) -> None:
        if module not in order:
            order.append(module)

    handles = [m.register_forward_hook(seen) for m in model.modules() if isinstance(m, WEIGHTED)]
    try:
        with autocast if autocast is not None else contextlib.nullcontext():
            logits = model(inputs)
        loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets)
    finally:
        for handle in handles:
            handle.remove()
    used = [m for m in order if m.weight.requires_grad]
    grads = torch.autograd.grad(loss, [m.weight for m in used], allow_unused=True)
    norms = [math.nan if g is None else float(g.detach().double().norm()) for g in grads]
    return [names[m] for m in used], norms


def role(model: SkipNetwork, name: str) -> str:
    """``plain`` (no unit has a shortcut), ``highway`` (the registry's Highway family) or ``residual``."""
    if not any(info.has_shortcut for info in model.residual_blocks()):
        return "plain"
    return "highway" if get_model_entry(name).family == "highway" else "residual"


# -- the two parts of the study ------------------------------------------------------------------------------


def _sweep(name: str, options: Options, context: Context, data: StudyData) -> dict:
    """Per depth: every layer's gradient norm at initialisation for each seed, and first/last over seeds."""
    result: dict[str, Any] = {"depths": [], "requested_depths": list(options.depths), "by_depth": {}}
    jobs = [(d, s) for d in options.depths for s in range(options.seeds)]
    for depth, seed in context.progress(jobs, f"gradients {name}"):
        model, actual = build_near(name, depth, seed, **data.shapes(name))
        result["role"] = role(model, name)
        model.to(context.device)
        x, y = data.batch(model, options.samples, seed, context.device)
        with batch_statistics(model):
            layers, norms = layer_gradient_norms(model, x, y)
        entry = result["by_depth"].setdefault(str(actual), {"layers": layers, "norms": [], "first_last": []})
        entry["norms"].append(norms)
        entry["first_last"].append(norms[0] / norms[-1])
        if actual not in result["depths"]:
            result["depths"].append(actual)
    for entry in result["by_depth"].values():
        _summarise(entry)
    return result


def _summarise(entry: dict) -> None:
    """Mean per layer, and first/last as a spread (linear and log10) over the seeds or batches."""
    ratios = entry["first_last"]
    entry["norm_mean"] = [float(torch.tensor(column).mean()) for column in zip(*entry["norms"])]
    entry["first_last"] = {"values": ratios, **spread(ratios)}
    entry["log10_first_last"] = spread(math.log10(r) if r > 0 else math.nan for r in ratios)
    entry["log10_by_seed"] = [math.log10(r) if r > 0 else None for r in ratios]


def _checkpoints(trained: TrainedRun, options: Options, context: Context) -> dict[str, Any]:
    """Per kept snapshot of a trained run: every layer's gradient norm on ``seeds`` training batches."""
    run = trained.run
    batches = first_batches(run.loader("train"), options.samples * options.seeds)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    entry: dict[str, Any] = {**trained.describe(), "checkpoints": {}, "steps": []}
    for label, step, opened in context.progress(trained.checkpoints(), f"gradients {trained.label}"):
        found: dict[str, Any] = {"norms": [], "first_last": [], "step": step}
        for seed in range(options.seeds):
            part = slice(seed * options.samples, (seed + 1) * options.samples)
            with batch_statistics(opened.model):
                layers, norms = layer_gradient_norms(opened.model, x[part], y[part], opened.precision.autocast())
            found["layers"] = layers
            found["norms"].append(norms)
            found["first_last"].append(norms[0] / norms[-1])
        _summarise(found)
        entry["checkpoints"][label] = found
        entry["steps"].append(step)
    return entry


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Gradient norms per layer at initialisation over depth, and at the snapshots of trained runs."""
    data = StudyData.load(context)
    sweep = {name: _sweep(name, options, context, data) for name in options.models or SWEPT}
    runs = trained_runs(NAME, options, context)
    return {
        "settings": {
            "inputs": data.description,
            "loss": "mean cross-entropy of the batch against its labels",
            "norm": "Frobenius norm of dL/dW of every conv and linear weight, in forward order",
            "bn": BN_BATCH,
            "trained_batches": "the first seeds x samples images of each run's training split, one batch per seed",
            "vanishing_threshold": f"first/last falling by 10^{VANISHED} or more over the sweep",
        },
        "trained_runs": [r.describe() for r in runs],
        "init": sweep,
        "trained": [_checkpoints(r, options, context) for r in runs],
    }


# -- verdict, table, figures ---------------------------------------------------------------------------------


def _drifts(result: dict) -> list[float | None]:
    """Per seed: log10 of first/last at the deepest depth minus at the shallowest (seeds paired by index)."""
    depths = sorted(result["depths"])
    deep = result["by_depth"][str(depths[-1])]["log10_by_seed"]
    shallow = result["by_depth"][str(depths[0])]["log10_by_seed"]
    return [None if a is None or b is None else b - a for a, b in zip(shallow, deep)]


def judge(numbers: dict[str, Any]) -> Verdict:
    sweep = numbers["init"]
    drifts = {name: _drifts(result) for name, result in sweep.items() if len(result["depths"]) > 1}
    residual = [n for n in drifts if sweep[n]["role"] == "residual"]
    plain = [n for n in drifts if sweep[n]["role"] == "plain"]
    if not residual:
        return judged([], missing="no residual net was swept over two or more depths")
    checks = [
        Check("kept", f"change of {n}'s log10 first/last gradient ratio over the sweep", tuple(drifts[n]), _t("kept"))
        for n in residual
    ]
    for p in plain:
        margins = [
            None
            if d is None or any(drifts[r][s] is None for r in residual)
            else abs(d) - max(abs(drifts[r][s]) for r in residual)
            for s, d in enumerate(drifts[p])
        ]
        checks.append(
            Check("plain_moves_more", f"{p}'s |drift| minus the residual nets'", tuple(margins), _t("plain_moves_more"))
        )
    found = (
        "over depths "
        + ", ".join(f"{n} {min(sweep[n]['depths'])}-{max(sweep[n]['depths'])}" for n in drifts)
        + " the first/last gradient-norm ratio at initialisation moved by "
        + ", ".join(f"{n} {_mean_drift(drifts[n]):+.2f}" for n in drifts)
        + " decades"
    )
    moving = {
        entry["label"]: settling(
            entry["steps"],
            [c["log10_first_last"]["mean"] for c in entry["checkpoints"].values()],
            quantity="log10 first/last gradient ratio of the trained run",
        )
        for entry in numbers["trained"]
    }
    notes = ["The verdict is decided at initialisation; the trained runs are reported, not judged"]
    return judged(checks, found=found, settling=moving, notes=notes)


def _t(key: str) -> Threshold:
    return THRESHOLDS[key]


def _mean_drift(values: Sequence[float | None]) -> float:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else math.nan


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    return _table(numbers["init"], numbers["trained"]), _figures(numbers, out)


def _table(sweep: dict[str, dict], trained: list[dict]) -> str:
    lines = ["| net | role | depth | first-layer grad norm | last-layer grad norm | first/last (mean ± std) |"]
    lines.append("|---|---|---|---|---|---|")
    for name, result in sweep.items():
        for depth in result["depths"]:
            entry = result["by_depth"][str(depth)]
            first, last = entry["norm_mean"][0], entry["norm_mean"][-1]
            lines.append(
                f"| {name} | {result['role']} | {depth} | {number(first):.3g} | {number(last):.3g} | "
                f"{fmt(entry['first_last'])} |"
            )
    if trained:
        lines += ["", "| trained run | checkpoint | first/last (mean ± std over batches) |", "|---|---|---|"]
        for entry in trained:
            for label, found in entry["checkpoints"].items():
                lines.append(f"| {entry['label']} | {label} | {fmt(found['first_last'])} |")
    return "\n".join(lines)


def _figures(numbers: dict[str, Any], out: Path) -> list[Path]:
    sweep, trained = numbers["init"], numbers["trained"]
    figures = []
    names = list(sweep)
    figure, axes = new_figure(4.2 * len(names), 3.8, cols=len(names))
    axes = list(axes[0]) if len(names) > 1 else [axes]
    for ax, name in zip(axes, names):
        result = sweep[name]
        depths = sorted(result["depths"])
        stats = [result["by_depth"][str(d)]["first_last"] for d in depths]
        ax.errorbar(
            depths,
            [number(s["mean"]) for s in stats],
            yerr=[number(s["std"]) for s in stats],
            marker="o",
            capsize=3,
            label="mean ± std over seeds",
        )
        for d, s in zip(depths, stats):
            ax.scatter([d] * len(s["values"]), [number(v) for v in s["values"]], s=10, color="grey", alpha=0.6)
        ax.set_yscale("log")
        ax.set(xlabel="depth (weighted layers)", ylabel="||dL/dW|| first layer / last layer")
        ax.set_title(f"{name} ({result['role']})", fontsize=9)
        ax.legend(fontsize=8)
    titled(figure, "First-over-last layer gradient norm against depth", UNTRAINED)
    figures.append(save_figure(figure, out, f"{NAME}-ratio-vs-depth"))

    figure, axes = new_figure(4.2 * len(names), 3.8, cols=len(names))
    axes = list(axes[0]) if len(names) > 1 else [axes]
    for ax, name in zip(axes, names):
        result = sweep[name]
        for depth in sorted(result["depths"]):
            norms = [number(v) for v in result["by_depth"][str(depth)]["norm_mean"]]
            ax.plot(range(len(norms)), norms, label=f"depth {depth}")
        ax.set_yscale("log")
        ax.set(xlabel="layer (forward order; last = classifier)", ylabel="||dL/dW|| (mean over seeds)")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=8)
    titled(figure, "Gradient norm of every layer", UNTRAINED)
    figures.append(save_figure(figure, out, f"{NAME}-layers-init"))

    if trained:
        figure, axes = new_figure(4.6 * len(trained), 3.8, cols=len(trained))
        axes = list(axes[0]) if len(trained) > 1 else [axes]
        for ax, entry in zip(axes, trained):
            for label, found in entry["checkpoints"].items():
                ax.plot(range(len(found["norm_mean"])), [number(v) for v in found["norm_mean"]], label=label)
            ax.set_yscale("log")
            ax.set(xlabel="layer (forward order; last = classifier)", ylabel="||dL/dW|| (mean over batches)")
            ax.set_title(entry["label"], fontsize=9)
            legend_outside(ax, title="checkpoint")
        titled(figure, "Gradient norm of every layer at each kept checkpoint", trained_for(numbers["trained_runs"]))
        figures.append(save_figure(figure, out, f"{NAME}-layers-trained"))
    return figures
