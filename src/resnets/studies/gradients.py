"""``resnets study gradients``: the gradient norm of every layer, plain vs residual vs Highway, over depth.

He et al. 2016 ("Identity Mappings in Deep Residual Networks", eq. 5) write the gradient at a shallower unit
as dL/dx_l = dL/dx_L (1 + d/dx_l sum F): the term dL/dx_L reaches every unit unchanged through the identity
shortcuts, so the gradient of a shallow layer does not vanish however deep the net, while a plain net's
gradient is a product of one Jacobian per layer and shrinks or explodes with depth.

What is measured, per layer: ``||dL/dW||`` (the Frobenius norm) of every convolution and linear weight, in
the order the forward pass first uses them (stem first, classifier last, shortcut projections and Highway
gates where they run), for L = the mean cross-entropy of one batch against its labels. The headline is
``first/last``: the first layer's gradient norm over the last (classifier) layer's, against depth.

- At initialisation, over a depth sweep of each family (``model_at_depth``; a Highway net gets the nearest
  depth it can have, 3n+4), with BatchNorm on batch statistics (running statistics of a fresh net are unset)
  and everything else in eval mode (no dropout or drop path); one fresh net and one batch per seed.
- Along training, at the weight snapshots of short trained runs (step 0 .. step 400 by default, or ``--run``),
  with the same batch-statistics BN, i.e. the gradient an optimiser step would see, on training batches.

Batches are real images of the study's data (Fashion-MNIST by default) with their labels; only where the
default data set is missing do random normal images with random labels stand in, which the JSON says.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.models import SkipNetwork, get_model_entry
from resnets.studies.common import (
    StudyOptions,
    StudyResult,
    first_batches,
    fmt,
    new_figure,
    progress,
    save_figure,
    seeds,
    spread,
)
from resnets.studies.trained import DEFAULT_STEPS, HIGHWAY, PLAIN, RESIDUAL, open_measured, trained_runs
from resnets.studies.untrained import BN_BATCH, StudyData, batch_statistics, build_near

NAME = "gradients"
CLAIM = (
    "In a residual net the gradient of a shallower unit always receives the gradient of the deepest unit as a "
    "directly added term, so it does not vanish with depth, whereas a plain net's gradient shrinks or explodes "
    "with depth (He et al. 2016, 'Identity Mappings in Deep Residual Networks', eq. 5)."
)
DEFAULT_MODELS = (RESIDUAL, PLAIN, HIGHWAY)
DEFAULT_DEPTHS = (20, 56, 110)
DEFAULT_SAMPLES = 16  # images per batch (one batch per seed); BN uses their statistics
VANISHED = 1.0  # log10: the first/last ratio falling tenfold over the depth sweep counts as vanishing
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# -- the measurement -------------------------------------------------------------------------------------------


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


def _sweep(name: str, depths: Sequence[int], options: StudyOptions, data: StudyData, samples: int) -> dict:
    """Per depth: every layer's gradient norm at initialisation for each seed, and first/last over seeds."""
    result: dict[str, Any] = {"depths": [], "requested_depths": list(depths), "by_depth": {}}
    jobs = [(d, s) for d in depths for s in seeds(options)]
    for depth, seed in progress(jobs, desc=f"gradients {name}", quiet=options.quiet):
        model, actual = build_near(name, depth, seed, **data.shapes(name))
        result["role"] = role(model, name)
        model.to(options.device)
        x, y = data.batch(model, samples, seed, options.device)
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


def _checkpoints(options: StudyOptions, models: Sequence[str], samples: int) -> list[dict]:
    """Per trained run and kept snapshot: every layer's gradient norm on ``seeds`` training batches."""
    steps = options.pick("steps", DEFAULT_STEPS)
    results = []
    for run in trained_runs(options, models, steps=steps):
        batches = first_batches(run.loader("train"), samples * len(seeds(options)))
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        checkpoints = [f"step-{n}" for n in run.snapshots] or [None]
        entry: dict[str, Any] = {
            "run": str(run.path or run.checkpoint),
            "model": run.record.model,
            "checkpoints": {},
        }
        for checkpoint in progress(checkpoints, desc=f"gradients {run.record.model}", quiet=options.quiet):
            opened = run if checkpoint is None else open_measured(options, run.path, checkpoint)
            label = checkpoint or run.checkpoint.stem
            found: dict[str, Any] = {"norms": [], "first_last": []}
            for seed in seeds(options):
                part = slice(seed * samples, (seed + 1) * samples)
                with batch_statistics(opened.model):
                    layers, norms = layer_gradient_norms(opened.model, x[part], y[part], opened.precision.autocast())
                found["layers"] = layers
                found["norms"].append(norms)
                found["first_last"].append(norms[0] / norms[-1])
            _summarise(found)
            entry["checkpoints"][label] = found
        results.append(entry)
    return results


# -- verdict, table, figures ---------------------------------------------------------------------------------


def _drift(result: dict) -> float:
    """log10 of first/last at the deepest depth minus at the shallowest (mean log10 over seeds)."""
    by_depth = result["by_depth"]
    depths = sorted(result["depths"])
    return by_depth[str(depths[-1])]["log10_first_last"]["mean"] - by_depth[str(depths[0])]["log10_first_last"]["mean"]


def _verdict(sweep: dict[str, dict]) -> tuple[bool | None, str, dict[str, float]]:
    drift = {name: _drift(result) for name, result in sweep.items() if len(result["depths"]) > 1}
    residual = [n for n in drift if sweep[n]["role"] == "residual"]
    plain = [n for n in drift if sweep[n]["role"] == "plain"]
    highway = [n for n in drift if sweep[n]["role"] == "highway"]
    if not residual:
        return None, "No residual net was swept over two or more depths, so the claim cannot be judged.", drift
    kept = all(drift[n] > -VANISHED for n in residual)
    calmer = all(abs(drift[p]) > max(abs(drift[n]) for n in residual) for p in plain)
    supported = kept and calmer

    def said(names: list[str]) -> str:
        return ", ".join(f"{n} {10 ** drift[n]:.3g}x" for n in names)

    text = (
        f"Over the depth sweep the first/last gradient-norm ratio at initialisation changed by {said(residual)} "
        f"in the residual net{'s' if len(residual) > 1 else ''}"
        + (f" and by {said(plain)} in the plain net{'s' if len(plain) > 1 else ''}" if plain else "")
        + (f" ({said(highway)} in Highway)" if highway else "")
        + (
            ": the residual gradient did not vanish and moved less than the plain one, as claimed."
            if supported
            else (
                ": the residual first-layer gradient fell tenfold or more, against the claim."
                if not kept
                else ": the residual gradient did not vanish, but the plain one moved no more, so the contrast "
                "the claim draws is not seen."
            )
        )
    )
    return supported, text, drift


def _table(sweep: dict[str, dict], trained: list[dict]) -> str:
    lines = ["| net | role | depth | first-layer grad norm | last-layer grad norm | first/last (mean ± std) |"]
    lines.append("|---|---|---|---|---|---|")
    for name, result in sweep.items():
        for depth in result["depths"]:
            entry = result["by_depth"][str(depth)]
            first, last = entry["norm_mean"][0], entry["norm_mean"][-1]
            lines.append(
                f"| {name} | {result['role']} | {depth} | {first:.3g} | {last:.3g} | {fmt(entry['first_last'])} |"
            )
    if trained:
        lines += ["", "| trained run | checkpoint | first/last (mean ± std over batches) |", "|---|---|---|"]
        for entry in trained:
            for label, found in entry["checkpoints"].items():
                lines.append(f"| {entry['model']} | {label} | {fmt(found['first_last'])} |")
    return "\n".join(lines)


def _figures(sweep: dict[str, dict], trained: list[dict], out: str) -> list:
    figures = []
    names = list(sweep)
    figure, axes = new_figure(4.0 * len(names), 3.6, cols=len(names))
    axes = list(axes[0]) if len(names) > 1 else [axes]
    for ax, name in zip(axes, names):
        result = sweep[name]
        depths = sorted(result["depths"])
        stats = [result["by_depth"][str(d)]["first_last"] for d in depths]
        ax.errorbar(
            depths,
            [s["mean"] for s in stats],
            yerr=[s["std"] for s in stats],
            marker="o",
            capsize=3,
            label="mean ± std over seeds",
        )
        for d, s in zip(depths, stats):
            ax.scatter([d] * len(s["values"]), s["values"], s=10, color="grey", alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("depth (weighted layers)")
        ax.set_ylabel("||dL/dW|| first layer / last layer")
        ax.set_title(f"{name} ({result['role']}), at init")
        ax.legend(fontsize=8)
    figures.append(save_figure(figure, out, f"{NAME}-ratio-vs-depth"))

    figure, axes = new_figure(4.0 * len(names), 3.6, cols=len(names))
    axes = list(axes[0]) if len(names) > 1 else [axes]
    for ax, name in zip(axes, names):
        result = sweep[name]
        for depth in sorted(result["depths"]):
            norms = result["by_depth"][str(depth)]["norm_mean"]
            ax.plot(range(len(norms)), norms, label=f"depth {depth}")
        ax.set_yscale("log")
        ax.set_xlabel("layer (forward order; last = classifier)")
        ax.set_ylabel("||dL/dW|| (mean over seeds)")
        ax.set_title(f"{name} at initialisation")
        ax.legend(fontsize=8)
    figures.append(save_figure(figure, out, f"{NAME}-layers-init"))

    if trained:
        figure, axes = new_figure(4.0 * len(trained), 3.6, cols=len(trained))
        axes = list(axes[0]) if len(trained) > 1 else [axes]
        for ax, entry in zip(axes, trained):
            for label, found in entry["checkpoints"].items():
                ax.plot(range(len(found["norm_mean"])), found["norm_mean"], label=label)
            ax.set_yscale("log")
            ax.set_xlabel("layer (forward order; last = classifier)")
            ax.set_ylabel("||dL/dW|| (mean over batches)")
            ax.set_title(f"{entry['model']} along training")
            ax.legend(fontsize=8)
        figures.append(save_figure(figure, out, f"{NAME}-layers-trained"))
    return figures


def run(options: StudyOptions) -> StudyResult:
    """Gradient norms per layer at initialisation over depth, and at the snapshots of trained runs.

    Reads ``models`` (default resnet20, plain20, highway_cifar19), ``depths`` (20, 56, 110), ``seeds`` (fresh
    nets and batches), ``samples`` (16 images per batch), ``steps`` and ``runs`` (the trained runs), ``data``.
    """
    models = tuple(options.pick("models", DEFAULT_MODELS))
    depths = tuple(options.pick("depths", DEFAULT_DEPTHS))
    samples = int(options.pick("samples", DEFAULT_SAMPLES))
    data = StudyData.load(options)
    sweep = {name: _sweep(name, depths, options, data, samples) for name in models}
    trained = _checkpoints(options, models, samples)
    supported, verdict, drift = _verdict(sweep)
    settings = {
        "models": list(models),
        "depths": list(depths),
        "seeds": len(seeds(options)),
        "samples": samples,
        "inputs": data.description,
        "loss": "mean cross-entropy of the batch against its labels",
        "norm": "Frobenius norm of dL/dW of every conv and linear weight, in forward order",
        "bn": BN_BATCH,
        "runs": [entry["run"] for entry in trained],
        "checkpoints": sorted({label for entry in trained for label in entry["checkpoints"]}),
        "trained_batches": "the first seeds x samples images of each run's training split, one batch per seed",
        "steps": options.pick("steps", DEFAULT_STEPS) if not options.runs else None,
        "device": options.device,
        "vanishing_threshold": f"first/last falling by 10^{VANISHED} or more over the sweep",
    }
    numbers = {"init": sweep, "trained": trained, "log10_drift_over_sweep": drift}
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings=settings,
        numbers=numbers,
        table=_table(sweep, trained),
        figures=_figures(sweep, trained, options.out),
    )
