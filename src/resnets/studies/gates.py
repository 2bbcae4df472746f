"""Transform-gate activity of trained Highway networks, per layer and checkpoint (Srivastava et al. 2015).

Srivastava, Greff & Schmidhuber 2015 ("Training Very Deep Networks", Sec. 4 and 4.1, Fig. 2 and 3) look inside
trained highway nets: the mean transform-gate activity T(x) differs from layer to layer, each input opens only a
few gates (the other layers carry it through), while in their CIFAR-100 net most gates are active on average,
and the gates' biases move during training.

Here the gate values are read by forward hooks on each unit's gate, reached through the unit interface
(``SkipUnit.gate()``: a highway layer's transform gate, whose output is T(x)). Per layer, on a seeded random
subset of the test split in eval mode:

- ``mean_t``: the mean of T over samples, gate channels (units) and positions;
- ``closed_per_input``: for one input, the share of the layer's gate values (units, or channels at every
  position) below 0.5, averaged over inputs: how many gates a single input leaves closed, the paper's measure;
- ``carry_fraction``: the fraction of gate channels (units of a fully connected layer, channels of a conv
  layer) whose T, averaged over samples and positions, is below 0.5: they mostly carry on average (reported:
  the paper finds its CIFAR-100 gates mostly open on average);
- ``sample_std``: the population std over samples of each sample's mean T (how much the gate depends on x);

each at every weight snapshot the run kept (``step-N``), so the change from the first to the last is measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.models import SkipNetwork
from resnets.studies.common import BN_EVAL_MODE, fmt, number, spread, subset_batches
from resnets.studies.contract import Context, TrainedOptions, option
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.trained import TrainedRun, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "gates"
CLAIM = (
    "A trained Highway network routes each input through few of its layers: for any one input most transform gates "
    "are closed (T(x) < 0.5: the layer carries its input) and different inputs open different gates; gate "
    "activity differs from layer to layer, and training moves the gates from where their negative initial bias "
    "set them (Srivastava, Greff & Schmidhuber 2015, 'Training Very Deep Networks', Sec. 4 and 4.1, Fig. 2 and 3). "
    "The gates are judged per input, as the paper looks at them: on average over inputs its CIFAR-100 gates are "
    "mostly open."
)
SRIVASTAVA = "Srivastava, Greff & Schmidhuber 2015"
CARRY_BELOW = 0.5  # a gate value (or a channel's mean) below this carries more than it transforms
KEYS = ("mean_t", "closed_per_input", "carry_fraction", "sample_std")  # per layer, see the module docstring
THRESHOLDS = {
    "mostly_closed": Threshold(
        0.5,
        above=True,
        unit="",
        paper="for the 50-layer CIFAR-100 net 'most transform gates are active on average, while they show very "
        "selective activity for the single example': for each sample only a few blocks transform (Sec. 4.1, "
        "Fig. 2 columns 2-3; the same, less marked, for MNIST); in the MNIST net closing the gates of any of "
        "layers 15-45 has close to no effect, about 60% of its layers stay idle (Sec. 4.2, Fig. 4); no share "
        "of closed gates is given",
        source=f"{SRIVASTAVA}, Sec. 4, 4.1 and 4.2, Fig. 2 and 4",
        why="our line: the share of a single input's gate values below 0.5, averaged over the layers and the "
        "inputs, at the last checkpoint, above one half (the channel means over inputs, which the paper finds "
        "mostly open for CIFAR-100, are reported beside it, not judged)",
    ),
    "layers_differ": Threshold(
        0.05,
        above=True,
        unit="",
        paper="in the CIFAR-100 net 'the biases increase with depth forming a gradient', inversely correlated "
        "with the layers' average gate activity (Fig. 2, columns 1-2); the mean activity pattern also differs "
        "between classes (Fig. 3); no number",
        source=f"{SRIVASTAVA}, Sec. 4 and 4.1, Fig. 2 and 3",
        why="our line: the span (max - min) of the layers' mean T at the last checkpoint above 0.05",
    ),
    "changed": Threshold(
        0.01,
        above=True,
        unit="",
        paper="the 50-layer nets' gate biases were initialised to -2 (MNIST) and -4 (CIFAR-100) and 'contrary to "
        "our expectations most biases decreased further during training' (Sec. 4); all gates start biased "
        "towards closed, so every layer at first mostly copies its input, and lesioning shows the trained "
        "CIFAR-100 net uses its first 40 or so layers (Sec. 4.2, Fig. 4); no size of the change is given",
        source=f"{SRIVASTAVA}, Sec. 4 and 4.2, Fig. 2 and 4",
        why="our line: the mean |change| of the layers' mean T from the first checkpoint to the last above 0.01",
    ),
}


@dataclass(frozen=True)
class Options(TrainedOptions):
    samples: int = option(500, "test images per seed")
    seeds: int = option(3, "test subsets, each drawn by its own seed")


class _GateMoments:
    """Running sums of one gate's output: per channel over samples and positions, and each sample's mean."""

    def __init__(self) -> None:
        self.count = 0  # values per channel seen
        self.sum: torch.Tensor | None = None
        self.sample_means: list[torch.Tensor] = []
        self.sample_closed: list[torch.Tensor] = []  # per sample: the share of its gate values below 0.5

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        t = output.detach().to(torch.float64)  # (B, C, H, W) or (B, D)
        per_channel = t.movedim(1, -1).reshape(-1, t.shape[1])  # (B * positions, C)
        total = per_channel.sum(0).cpu()
        self.sum = total if self.sum is None else self.sum + total
        self.count += per_channel.shape[0]
        self.sample_means.append(t.reshape(t.shape[0], -1).mean(1).cpu())
        self.sample_closed.append((t.reshape(t.shape[0], -1) < CARRY_BELOW).double().mean(1).cpu())

    def stats(self) -> dict[str, float]:
        if self.sum is None:
            return {
                "mean_t": math.nan,
                "closed_per_input": math.nan,
                "carry_fraction": math.nan,
                "sample_std": math.nan,
            }
        channel_mean = self.sum / self.count
        samples = torch.cat(self.sample_means)
        return {
            "mean_t": channel_mean.mean().item(),  # every channel has the same count: the mean of all values
            "closed_per_input": torch.cat(self.sample_closed).mean().item(),
            "carry_fraction": (channel_mean < CARRY_BELOW).double().mean().item(),
            "sample_std": samples.std(correction=0).item(),
        }


def gate_modules(model: SkipNetwork, what: str = "the model") -> list[tuple[str, str, int, nn.Module]]:
    """(unit name, gate module name, stage, gate) of every gated unit in forward order.

    Raises ConfigError for a model without gates: this instrument needs a Highway net.
    """
    names = {module: name for name, module in model.named_modules()}
    found = [
        (info.name, names[gate], info.stage, gate) for info in model.residual_blocks() if (gate := info.unit.gate())
    ]
    if not found:
        raise ConfigError(
            f"{what} has no transform gates (no unit has a gate): the gates study needs a Highway net; train one "
            "(e.g. --model highway_cifar19 or highway_fc_10) or pass its run with --run"
        )
    return found


@contextmanager
def _hooked(gates: Sequence[tuple[str, str, int, nn.Module]]) -> Iterator[list[_GateMoments]]:
    moments = [_GateMoments() for _ in gates]
    with ExitStack() as stack:
        for (_, _, _, module), moment in zip(gates, moments):
            stack.callback(module.register_forward_hook(moment).remove)
        yield moments


def gate_stats(model: SkipNetwork, batches: Sequence[tuple[torch.Tensor, Any]], precision: Any = None) -> list[dict]:
    """Per gated unit: name, gate, stage and the :data:`KEYS` over ``batches`` (see the module docstring)."""
    gates = gate_modules(model)
    with _hooked(gates) as moments, torch.no_grad():
        for x, _ in batches:
            with precision.autocast() if precision is not None else ExitStack():
                model(x)
    return [
        {"name": unit, "gate": gate, "stage": stage, **m.stats()} for (unit, gate, stage, _), m in zip(gates, moments)
    ]


def _measure_run(trained: TrainedRun, options: Options, context: Context) -> dict[str, Any]:
    """Gate statistics of ``run`` at each checkpoint, over the seeded test subsets, and their change."""
    run = trained.run
    gate_modules(run.model, f"run {str(run.path or run.checkpoint)!r} ({run.record.model})")
    subsets = [subset_batches(run, options.samples, seed) for seed in range(options.seeds)]
    measured = []
    for label, step, opened in context.progress(trained.checkpoints(), f"{NAME} {trained.label}"):
        per_seed = [gate_stats(opened.model, batches, opened.precision) for batches in subsets]
        layers = [
            {
                "name": first["name"],
                "gate": first["gate"],
                "stage": first["stage"],
                **{key: spread(s[i][key] for s in per_seed) for key in KEYS},
            }
            for i, first in enumerate(per_seed[0])
        ]
        by_seed = {key: [sum(r[key] for r in s) / len(s) for s in per_seed] for key in KEYS[:3]}
        spans = [max(r["mean_t"] for r in s) - min(r["mean_t"] for r in s) for s in per_seed]
        means = [layer["mean_t"]["mean"] for layer in layers]
        measured.append(
            {
                "checkpoint": label,
                "step": step,
                "layers": layers,
                "mean_t": spread(by_seed["mean_t"]),
                "closed_per_input": spread(by_seed["closed_per_input"]),
                "carry_fraction": spread(by_seed["carry_fraction"]),
                "layer_range": max(means) - min(means),
                "by_seed": {
                    **by_seed,
                    "layer_range": spans,
                    "layer_means": [[r["mean_t"] for r in s] for s in per_seed],
                },
            }
        )
    first, last = measured[0], measured[-1]
    delta_t = [b["mean_t"]["mean"] - a["mean_t"]["mean"] for a, b in zip(first["layers"], last["layers"])]
    delta_carry = [
        b["carry_fraction"]["mean"] - a["carry_fraction"]["mean"] for a, b in zip(first["layers"], last["layers"])
    ]
    moved = [
        sum(abs(b - a) for a, b in zip(before, after)) / len(before)
        for before, after in zip(first["by_seed"]["layer_means"], last["by_seed"]["layer_means"])
    ]
    change = {
        "from": first["checkpoint"],
        "to": last["checkpoint"],
        "mean_t": delta_t,
        "carry_fraction": delta_carry,
        "mean_abs_change_t": sum(abs(d) for d in delta_t) / len(delta_t) if len(measured) > 1 else math.nan,
        "mean_abs_change_t_by_seed": moved if len(measured) > 1 else [],
    }
    return {**trained.describe(), "checkpoints": measured, "change": change}


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Gate statistics of trained Highway runs (default: a highway_fc_20 run with its snapshots)."""
    runs = trained_runs(NAME, options, context)
    return {
        "settings": {
            "measured_on": "trained Highway runs at each kept weight snapshot, eval mode, the study's precision",
            "split": "test",
            "subset": "a random test subset drawn without replacement per seed (torch.randperm seeded with the seed)",
            "bn": BN_EVAL_MODE + "; the default Highway nets have no BN (norm='identity'), as in the paper",
            "gates": "forward hooks on each unit's gate (SkipUnit.gate(): a highway layer's transform gate)",
            "carry_below": CARRY_BELOW,
        },
        "trained": [r.describe() for r in runs],
        "runs": {trained.label: _measure_run(trained, options, context) for trained in runs},
    }


def judge(numbers: dict[str, Any]) -> Verdict:
    checks, parts, moving = [], [], {}
    for label, result in numbers["runs"].items():
        first, last = result["checkpoints"][0], result["checkpoints"][-1]
        at = last["checkpoint"]
        checks += [
            Check(
                "mostly_closed",
                f"share of one input's gates that {label} leaves closed at {at}",
                tuple(last["by_seed"]["closed_per_input"]),
                THRESHOLDS["mostly_closed"],
            ),
            Check(
                "layers_differ",
                f"span of {label}'s per-layer mean T at {at}",
                tuple(last["by_seed"]["layer_range"]),
                THRESHOLDS["layers_differ"],
            ),
        ]
        if result["change"]["mean_abs_change_t_by_seed"]:
            checks.append(
                Check(
                    "changed",
                    f"mean change of {label}'s per-layer mean T from {first['checkpoint']} to {at}",
                    tuple(result["change"]["mean_abs_change_t_by_seed"]),
                    THRESHOLDS["changed"],
                )
            )
        before, after = number(first["mean_t"]["mean"]), number(last["mean_t"]["mean"])
        parts.append(
            f"{label}'s gates average T = {before:.3f} at {first['checkpoint']} and {after:.3f} at {at}; on average "
            f"over inputs {number(last['carry_fraction']['mean']):.0%} of its gate channels mostly carry"
        )
        moving[label] = settling(
            [p["step"] for p in result["checkpoints"]],
            [p["closed_per_input"]["mean"] for p in result["checkpoints"]],
            quantity="share of one input's closed gates",
            threshold=THRESHOLDS["mostly_closed"].value,
        )
    single = [k for k, r in numbers["runs"].items() if not r["change"]["mean_abs_change_t_by_seed"]]
    notes = (
        [f"{', '.join(single)} kept one checkpoint only, so no change through training is measured"] if single else []
    )
    return judged(checks, found="; ".join(parts), notes=notes, settling=moving, trained=numbers.get("trained", ()))


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    figures = []
    training = trained_for(numbers["trained"])
    for i, (label, result) in enumerate(numbers["runs"].items()):
        figures += _figures(label, result, out, "" if i == 0 else f"-{i}", training)
    rows = []
    for label, result in numbers["runs"].items():
        rows += [
            f"**{label}** ({result['run']})",
            "",
            (
                "| checkpoint | mean T (all layers) | closed per input | carry fraction (channel means) | lowest "
                "layer's mean T | highest layer's mean T |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for point in result["checkpoints"]:
            means = [number(layer["mean_t"]["mean"]) for layer in point["layers"]]
            rows.append(
                f"| {point['checkpoint']} | {fmt(point['mean_t'])} | {fmt(point['closed_per_input'])} | "
                f"{fmt(point['carry_fraction'])} | "
                f"{min(means):.3f} | {max(means):.3f} |"
            )
        change = number(result["change"]["mean_abs_change_t"])
        rows += [
            "",
            f"Mean |change| of per-layer mean T, {result['change']['from']} → {result['change']['to']}: "
            + (f"{change:.3f}" if math.isfinite(change) else "- (one checkpoint)"),
            "",
        ]
    return "\n".join(rows), figures


def _figures(label: str, result: dict[str, Any], out: Path, suffix: str, training: str) -> list[Path]:
    paths = []
    for key, ylabel, title, name in (
        ("mean_t", "mean transform gate T(x)", "mean gate activity per layer", "mean-t"),
        ("closed_per_input", f"share of one input's gates with T < {CARRY_BELOW}", "closed gates per input", "closed"),
        ("carry_fraction", f"fraction of gate channels with T < {CARRY_BELOW}", "carry fraction per layer", "carry"),
    ):
        figure, axes = new_figure(8.2, 4.2)
        for point in result["checkpoints"]:
            values = [number(layer[key]["mean"]) for layer in point["layers"]]
            axes.plot(range(1, len(values) + 1), values, marker=".", label=point["checkpoint"])
        if key == "mean_t":
            axes.axhline(CARRY_BELOW, color="grey", lw=0.8, ls=":", label=f"T = {CARRY_BELOW}")
        axes.set(xlabel="highway layer (forward order)", ylabel=ylabel, ylim=(0, 1.02))
        legend_outside(axes, title="checkpoint")
        axes.grid(alpha=0.3)
        titled(figure, f"{label}: {title} at each kept checkpoint (Srivastava et al. 2015, Fig. 2)", training)
        paths.append(save_figure(figure, out, f"{NAME}-{name}{suffix}"))
    return paths
