"""Transform-gate activity of trained Highway networks, per layer and checkpoint (Srivastava et al. 2015).

Srivastava, Greff & Schmidhuber 2015 ("Training Very Deep Networks", Sec. 4.1, Fig. 2 and 3) look inside
trained highway nets: the mean transform-gate activity T(x) differs from layer to layer, many gates are mostly
closed (those layers carry their input through), and the gates' biases and activity move during training.

Here the gate values are read by forward hooks on the modules named ``transform_gate`` (the Highway family's
documented output: they return T(x)); each gate belongs to the unit of ``residual_blocks()`` whose name
prefixes its own. Per layer, on a seeded random subset of the test split in eval mode:

- ``mean_t``: the mean of T over samples, gate channels (units) and positions;
- ``carry_fraction``: the fraction of gate channels (units of a fully connected layer, channels of a conv
  layer) whose T, averaged over samples and positions, is below 0.5: they mostly carry;
- ``sample_std``: the population std over samples of each sample's mean T (how much the gate depends on x);

each at every weight snapshot the run kept (``step-N``), so the change from the first to the last is measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.models import SkipNetwork
from resnets.runs import Run
from resnets.studies.common import (
    BN_EVAL_MODE,
    StudyOptions,
    StudyResult,
    fmt,
    new_figure,
    progress,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.trained import DEFAULT_DATA, DEFAULT_STEPS, HIGHWAY, open_measured, trained_runs

NAME = "gates"
CLAIM = (
    "After training, many transform gates of a Highway network are mostly closed (T(x) < 0.5: the layer carries "
    "its input), gate activity differs from layer to layer, and it changes during training (Srivastava, Greff & "
    "Schmidhuber 2015, 'Training Very Deep Networks', Sec. 4.1, Fig. 2 and 3)."
)
GATE_MODULE = "transform_gate"  # the Highway family's gate modules; their output is T(x)
DEFAULT_SAMPLES = 500  # test samples per seed
CARRY_BELOW = 0.5  # a gate channel mostly carries when its mean T is below this
MOSTLY_CLOSED = 0.5  # "many gates closed": at least this fraction of gate channels carry after training
LAYERS_DIFFER = 0.05  # "differs per layer": the layers' mean T spans at least this range after training
CHANGED = 0.01  # "changes through training": per-layer mean T moves by at least this on average


class _GateMoments:
    """Running sums of one gate's output: per channel over samples and positions, and each sample's mean."""

    def __init__(self) -> None:
        self.count = 0  # values per channel seen
        self.sum: torch.Tensor | None = None
        self.sample_means: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        t = output.detach().to(torch.float64)  # (B, C, H, W) or (B, D)
        per_channel = t.movedim(1, -1).reshape(-1, t.shape[1])  # (B * positions, C)
        total = per_channel.sum(0).cpu()
        self.sum = total if self.sum is None else self.sum + total
        self.count += per_channel.shape[0]
        self.sample_means.append(t.reshape(t.shape[0], -1).mean(1).cpu())

    def stats(self) -> dict[str, float]:
        if self.sum is None:
            return {"mean_t": math.nan, "carry_fraction": math.nan, "sample_std": math.nan}
        channel_mean = self.sum / self.count
        samples = torch.cat(self.sample_means)
        return {
            "mean_t": channel_mean.mean().item(),  # every channel has the same count: the mean of all values
            "carry_fraction": (channel_mean < CARRY_BELOW).double().mean().item(),
            "sample_std": samples.std(correction=0).item(),
        }


def gate_modules(model: SkipNetwork, what: str = "the model") -> list[tuple[str, str, int, nn.Module]]:
    """(unit name, gate module name, stage, gate) of every transform gate in forward order of the units.

    Raises ConfigError for a model without gates: this instrument needs a Highway net.
    """
    blocks = model.residual_blocks()
    found = []
    for name, module in model.named_modules():
        if name.split(".")[-1] != GATE_MODULE:
            continue
        owners = [info for info in blocks if name.startswith(info.name + ".")]
        owner = max(owners, key=lambda info: len(info.name)) if owners else None
        found.append((owner.name if owner else name, name, owner.stage if owner else 1, module))
    if not found:
        raise ConfigError(
            f"{what} has no transform gates (no modules named {GATE_MODULE!r}): the gates study needs a Highway "
            "net; train one (e.g. --model highway_cifar19 or highway_fc_10) or pass its run with --run"
        )
    order = {info.name: info.index for info in blocks}
    return sorted(found, key=lambda item: order.get(item[0], len(order)))


@contextmanager
def _hooked(gates: Sequence[tuple[str, str, int, nn.Module]]) -> Iterator[list[_GateMoments]]:
    moments = [_GateMoments() for _ in gates]
    with ExitStack() as stack:
        for (_, _, _, module), moment in zip(gates, moments):
            stack.callback(module.register_forward_hook(moment).remove)
        yield moments


def gate_stats(model: SkipNetwork, batches: Sequence[tuple[torch.Tensor, Any]], precision: Any = None) -> list[dict]:
    """Per gated unit: name, gate, stage, mean_t, carry_fraction and sample_std over ``batches`` (see above)."""
    gates = gate_modules(model)
    with _hooked(gates) as moments, torch.no_grad():
        for x, _ in batches:
            with precision.autocast() if precision is not None else ExitStack():
                model(x)
    return [
        {"name": unit, "gate": gate, "stage": stage, **m.stats()} for (unit, gate, stage, _), m in zip(gates, moments)
    ]


def _checkpoints(run: Run, options: StudyOptions) -> list[tuple[str, Run]]:
    """Every kept snapshot, oldest first, then the run's own weights unless the last snapshot is them."""
    final_step = None
    if run.path and (run.path / "summary.json").is_file():
        final_step = json.loads((run.path / "summary.json").read_text()).get("steps")
    opened = [(f"step-{n}", open_measured(options, run.path, f"step-{n}")) for n in run.snapshots]
    if not run.snapshots or final_step not in run.snapshots:
        opened.append((run.checkpoint.stem, run))
    return opened


def _measure_run(options: StudyOptions, run: Run) -> dict[str, Any]:
    """Gate statistics of ``run`` at each checkpoint, over the seeded test subsets, and their change."""
    gate_modules(run.model, f"run {str(run.path or run.checkpoint)!r} ({run.record.model})")
    samples = options.pick("samples", DEFAULT_SAMPLES)
    subsets = [subset_batches(run, samples, seed) for seed in seeds(options)]
    checkpoints = _checkpoints(run, options)
    measured = []
    for label, opened in progress(checkpoints, desc=f"{NAME} {run.record.model}", quiet=options.quiet):
        per_seed = [gate_stats(opened.model, batches, opened.precision) for batches in subsets]
        layers = [
            {
                "name": first["name"],
                "gate": first["gate"],
                "stage": first["stage"],
                **{key: spread(s[i][key] for s in per_seed) for key in ("mean_t", "carry_fraction", "sample_std")},
            }
            for i, first in enumerate(per_seed[0])
        ]
        means = [layer["mean_t"]["mean"] for layer in layers]
        measured.append(
            {
                "checkpoint": label,
                "layers": layers,
                "mean_t": spread(sum(r["mean_t"] for r in s) / len(s) for s in per_seed),
                "carry_fraction": spread(sum(r["carry_fraction"] for r in s) / len(s) for s in per_seed),
                "layer_range": max(means) - min(means),
            }
        )
    first, last = measured[0], measured[-1]
    delta_t = [b["mean_t"]["mean"] - a["mean_t"]["mean"] for a, b in zip(first["layers"], last["layers"])]
    delta_carry = [
        b["carry_fraction"]["mean"] - a["carry_fraction"]["mean"] for a, b in zip(first["layers"], last["layers"])
    ]
    change = {
        "from": first["checkpoint"],
        "to": last["checkpoint"],
        "mean_t": delta_t,
        "carry_fraction": delta_carry,
        "mean_abs_change_t": sum(abs(d) for d in delta_t) / len(delta_t) if len(measured) > 1 else math.nan,
    }
    return {
        "model": run.record.model,
        "run": str(run.path or run.checkpoint),
        "checkpoints": measured,
        "change": change,
    }


def _figures(label: str, result: dict[str, Any], out: str, suffix: str) -> list:
    paths = []
    for key, ylabel, title, name in (
        ("mean_t", "mean transform gate T(x)", "mean gate activity per layer", "mean-t"),
        ("carry_fraction", f"fraction of gate channels with T < {CARRY_BELOW}", "carry fraction per layer", "carry"),
    ):
        figure, axes = new_figure(7.5, 4.2)
        for point in result["checkpoints"]:
            values = [layer[key]["mean"] for layer in point["layers"]]
            axes.plot(range(1, len(values) + 1), values, marker=".", label=point["checkpoint"])
        if key == "mean_t":
            axes.axhline(CARRY_BELOW, color="grey", lw=0.8, ls=":", label=f"T = {CARRY_BELOW}")
        axes.set(title=f"{label}: {title}", xlabel="highway layer (forward order)", ylabel=ylabel, ylim=(0, 1.02))
        axes.legend(title="checkpoint", loc="upper right" if key == "mean_t" else "lower left")
        axes.grid(alpha=0.3)
        paths.append(save_figure(figure, out, f"{NAME}-{name}{suffix}"))
    return paths


def _verdict(runs: dict[str, dict[str, Any]]) -> tuple[str, bool | None]:
    parts, decided = [], []
    for label, result in runs.items():
        first, last = result["checkpoints"][0], result["checkpoints"][-1]
        closed = last["carry_fraction"]["mean"] >= MOSTLY_CLOSED
        differs = last["layer_range"] >= LAYERS_DIFFER
        change = result["change"]["mean_abs_change_t"]
        decided += [closed, differs] + ([change >= CHANGED] if math.isfinite(change) else [])
        text = (
            f"at {last['checkpoint']} {label}'s gates average T = {last['mean_t']['mean']:.3f} and "
            f"{100 * last['carry_fraction']['mean']:.0f}% of gate channels mostly carry (T < {CARRY_BELOW}); the "
            f"layers' mean T spans {last['layer_range']:.3f}"
        )
        if math.isfinite(change):
            before, after = first["mean_t"]["mean"], last["mean_t"]["mean"]
            text += (
                f" and moved by {change:.3f} per layer on average since {first['checkpoint']} (mean T {before:.3f} "
                f"-> {after:.3f}: the gates {'open' if after > before else 'close'} with training, from where the "
                "initial gate bias set them)"
            )
        parts.append(text)
    supported = all(decided)
    if supported and any(not math.isfinite(r["change"]["mean_abs_change_t"]) for r in runs.values()):
        supported = None  # closed and differing, but no second checkpoint to see a change
    head = {True: "Supported", False: "Not supported", None: "Undecided (one checkpoint only)"}[supported]
    return f"{head}: {'; '.join(parts)}.", supported


def run(options: StudyOptions) -> StudyResult:
    """Gate statistics of trained Highway runs (default: a short highway_cifar19 run with 4 snapshots)."""
    steps = options.pick("steps", DEFAULT_STEPS)
    runs = trained_runs(options, options.models or (HIGHWAY,), steps=steps, snapshots=4)
    results: dict[str, dict[str, Any]] = {}
    for opened in runs:
        label = opened.record.model if opened.record.model not in results else str(opened.path or opened.checkpoint)
        results[label] = _measure_run(options, opened)
    figures = []
    for i, (label, result) in enumerate(results.items()):
        figures += _figures(label, result, options.out, "" if i == 0 else f"-{i}")
    verdict, supported = _verdict(results)
    rows = []
    for label, result in results.items():
        rows += [
            f"**{label}** ({result['run']})",
            "",
            "| checkpoint | mean T (all layers) | carry fraction | lowest layer's mean T | highest layer's mean T |",
            "|---|---|---|---|---|",
        ]
        for point in result["checkpoints"]:
            means = [layer["mean_t"]["mean"] for layer in point["layers"]]
            rows.append(
                f"| {point['checkpoint']} | {fmt(point['mean_t'])} | {fmt(point['carry_fraction'])} | "
                f"{min(means):.3f} | {max(means):.3f} |"
            )
        change = result["change"]["mean_abs_change_t"]
        rows += [
            "",
            f"Mean |change| of per-layer mean T, {result['change']['from']} → {result['change']['to']}: "
            + (f"{change:.3f}" if math.isfinite(change) else "- (one checkpoint)"),
            "",
        ]
    settings = {
        "measured_on": "trained Highway runs at each kept weight snapshot, eval mode, the run's precision",
        "runs": [r["run"] for r in results.values()],
        "checkpoints": {label: [p["checkpoint"] for p in r["checkpoints"]] for label, r in results.items()},
        "models": [r["model"] for r in results.values()],
        "default_run_steps": None if options.runs else steps,
        "data": "each run's recorded data" if options.runs else options.data or DEFAULT_DATA,
        "split": "test",
        "samples": options.pick("samples", DEFAULT_SAMPLES),
        "seeds": len(seeds(options)),
        "subset": "a random test subset drawn without replacement per seed (torch.randperm seeded with the seed)",
        "bn": BN_EVAL_MODE + "; the default Highway nets have no BN (norm='identity'), as in the paper",
        "gates": f"forward hooks on modules named {GATE_MODULE!r}, mapped to the unit whose name prefixes theirs",
        "carry_below": CARRY_BELOW,
        "thresholds": {"mostly_closed": MOSTLY_CLOSED, "layers_differ": LAYERS_DIFFER, "changed": CHANGED},
        "device": options.device,
    }
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings=settings,
        numbers={"runs": results},
        table="\n".join(rows),
        figures=figures,
    )
