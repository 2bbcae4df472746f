"""Layer responses of trained nets: residual branches respond less than plain layers (He et al. 2015, Fig. 7).

He, Zhang, Ren & Sun 2015 ("Deep Residual Learning for Image Recognition", Sec. 4.2 and Fig. 7) measure the
standard deviation of each 3x3 layer's response (after BN, before the nonlinearity and the addition) on
CIFAR-10 and find it smaller in ResNets than in their plain twins, and smaller in deeper ResNets: residual
functions stay closer to zero, as the reformulation intended.

Here the response of a unit is its branch F(x) as the shared unit interface hands it to taps: after the
branch's last BN and before the residual addition (for a plain unit, the same tensor before its ReLU). Its
standard deviation is taken over every element (samples, channels, positions) of a seeded random subset of
the test split, in eval mode with the run's weights and the study's precision; each seed draws another subset.
The mean response std of every net is also followed over the run's kept snapshots (the first seed's subset).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnets.errors import ConfigError
from resnets.models import SkipNetwork, get_model_entry, list_models
from resnets.runs import Run
from resnets.studies.common import BN_EVAL_MODE, fmt, kind, number, over_training_rows, spread, subset_batches
from resnets.studies.contract import INTS, Context, TrainedOptions, option
from resnets.studies.figures import legend_outside, new_figure, save_figure, titled, trained_for
from resnets.studies.trained import over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "responses"
CLAIM = (
    "The standard deviation of the layer responses (each residual branch after its last BN, before the addition) "
    "is smaller in ResNets than in their plain counterparts, and smaller in deeper ResNets: residual functions "
    "are generally closer to zero (He, Zhang, Ren & Sun 2015, 'Deep Residual Learning for Image Recognition', "
    "Sec. 4.2, Fig. 7)."
)
HE = "He, Zhang, Ren & Sun 2015"
THRESHOLDS = {
    "residual_over_plain": Threshold(
        1.0,
        above=False,
        unit="x",
        paper="'ResNets have generally smaller responses than their plain counterparts'; read off Fig. 7: "
        "sorted by size, ResNet-20's stds (about 2.5 down to 1.2) lie below plain-20's (2.4 to 1.3) and "
        "ResNet-56's (3 to 0.7) below plain-56's (2.4 to 1.0), a mean ratio of roughly 0.85 at 20 layers and "
        "0.75 at 56; in layer order ResNet-56 rises above plain-56 around layers 30-45",
        source=f"{HE}, Sec. 4.2 (Analysis of Layer Responses), Fig. 7 (every 3x3 layer after BN, CIFAR-10)",
        why="the residual net's mean response std over its plain twin's; below 1: it responds less. Our "
        "responses are each branch's output (its last BN), not every 3x3 layer as in Fig. 7",
    ),
    "deeper_over_shallower": Threshold(
        1.0,
        above=False,
        unit="x",
        paper="'the deeper ResNet has smaller magnitudes of responses, as evidenced by the comparisons among "
        "ResNet-20, 56, and 110'; read off Fig. 7: mean std roughly 1.6 (ResNet-20), 1.1 (56), 0.95 (110)",
        source=f"{HE}, Sec. 4.2, Fig. 7",
        why="a deeper ResNet's mean response std over a shallower one's of the same family",
    ),
}
RESPONSE = (
    "std over all elements (samples, channels, positions) of each unit's branch F(x) after its last BN, before "
    "the addition (plain units: before their ReLU); channel_std: the mean over channels of each channel's std"
)


@dataclass(frozen=True)
class Options(TrainedOptions):
    depths: tuple[int, ...] = option(
        (), "also train resnetD and plainD for each depth D (registered pairs: 20,32,44,56,110)", **INTS
    )
    samples: int = option(500, "test images per seed")
    seeds: int = option(3, "test subsets, each drawn by its own seed")


class _Moments:
    """Running float64 sums of a response per channel, so any number of batches gives one exact std."""

    def __init__(self) -> None:
        self.count = 0  # elements per channel seen
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def __call__(self, branch: torch.Tensor, shortcut: torch.Tensor | None = None) -> None:
        x = branch.detach().to(torch.float64)
        dim = 1 if x.dim() in (2, 4) else x.dim() - 1  # channels of (B, C, H, W) / (B, D); features of (B, T, D)
        flat = x.movedim(dim, -1).reshape(-1, x.shape[dim])  # (elements per channel, C)
        total, squares = flat.sum(0).cpu(), (flat * flat).sum(0).cpu()
        self.sum = total if self.sum is None else self.sum + total
        self.sumsq = squares if self.sumsq is None else self.sumsq + squares
        self.count += flat.shape[0]

    def std(self) -> float:
        """Population std over every element seen."""
        if self.sum is None:
            return math.nan
        n = self.count * self.sum.numel()
        mean = self.sum.sum().item() / n
        return math.sqrt(max(self.sumsq.sum().item() / n - mean * mean, 0.0))

    def channel_std(self) -> float:
        """Mean over channels of each channel's population std (the spread of channel means left out)."""
        if self.sum is None:
            return math.nan
        mean = self.sum / self.count
        return (self.sumsq / self.count - mean * mean).clamp_min(0).sqrt().mean().item()


def response_stds(model: SkipNetwork, batches: Sequence[tuple[torch.Tensor, Any]], precision: Any = None) -> list[dict]:
    """Per unit in forward order: name, stage and the std / channel std of its branch over ``batches``.

    The branch is read with a tap of the unit interface (reduced at once, so nothing is kept, and in-place
    ReLUs after the sum cannot touch it).
    """
    blocks = model.residual_blocks()
    moments = [_Moments() for _ in blocks]
    autocast = precision.autocast if precision is not None else ExitStack
    with ExitStack() as stack, torch.no_grad():
        for info, tap in zip(blocks, moments):
            stack.enter_context(info.tapped(tap))
        for x, _ in batches:
            with autocast():
                model(x)
    return [
        {"name": info.name, "stage": info.stage, "std": m.std(), "channel_std": m.channel_std()}
        for info, m in zip(blocks, moments)
    ]


def _models(options: Options) -> list[str]:
    """--model names, plus resnetD and plainD for each --depths D (none: the default runs')."""
    models = list(options.models)
    known = set(list_models())
    for depth in options.depths:
        pair = [f"resnet{depth}", f"plain{depth}"]
        if not set(pair) <= known:
            depths = sorted(int(m[5:]) for m in known if m.startswith("plain") and m[5:].isdigit())
            raise ConfigError(
                f"--depths {depth}: no registered resnet{depth}/plain{depth} pair; use one of "
                f"{', '.join(map(str, depths))} or name models with --model"
            )
        models += [m for m in pair if m not in models]
    return models


def describe(model: SkipNetwork, measured: Sequence[list[dict]]) -> dict[str, Any]:
    """A net's kind (residual: any unit has a shortcut), unit count and per-layer stds over seeds (``measured``)."""
    blocks = model.residual_blocks()
    layers = [
        {
            "name": info.name,
            "stage": info.stage,
            "std": spread(m[i]["std"] for m in measured),
            "channel_std": spread(m[i]["channel_std"] for m in measured),
        }
        for i, info in enumerate(blocks)
    ]
    by_seed = [sum(r["std"] for r in m) / len(m) for m in measured]
    return {
        "kind": kind(model),
        "units": len(blocks),
        "layers": layers,
        "mean_std": spread(by_seed),
        "mean_std_by_seed": by_seed,
        "sorted_std": sorted((layer["std"]["mean"] for layer in layers), reverse=True),
    }


def mean_response(run: Run, samples: int, seed: int) -> float:
    """The mean over units of each unit's response std, on one seeded test subset: the headline of one net."""
    measured = response_stds(run.model, subset_batches(run, samples, seed), run.precision)
    return sum(m["std"] for m in measured) / len(measured)


def measure(options: Options, context: Context) -> dict[str, Any]:
    """The branch responses of trained runs (default: the 20-layer twins and the 56-layer residual net) and of
    their kept snapshots."""
    runs = trained_runs(NAME, options, context, models=[] if options.runs else _models(options))
    nets: dict[str, dict[str, Any]] = {}
    for trained in runs:
        run = trained.run
        per_seed = [
            response_stds(run.model, subset_batches(run, options.samples, seed), run.precision)
            for seed in context.progress(range(options.seeds), f"{NAME} {trained.label}")
        ]
        over = over_snapshots(
            trained, lambda r: mean_response(r, options.samples, 0), f"{NAME} {trained.label} snapshots"
        )
        family = get_model_entry(run.record.model).family
        nets[trained.label] = {
            **trained.describe(),
            "family": family,
            **describe(run.model, per_seed),
            "over_training": over,
        }
    return {
        "settings": {
            "measured_on": "trained runs, eval mode, the run's weights in the study's precision",
            "split": "test",
            "subset": "a random test subset drawn without replacement per seed (torch.randperm seeded with the seed)",
            "bn": BN_EVAL_MODE,
            "response": RESPONSE,
            "over_training": "mean response std at every kept snapshot, on the first seed's subset",
        },
        "trained": [r.describe() for r in runs],
        "nets": nets,
        **compare(nets),
    }


def compare(nets: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Residual against plain of the same family and unit count, and each ResNet against the next deeper one of
    its family (a Highway net is no deeper ResNet-20)."""
    residual = sorted((n for n in nets if nets[n]["kind"] == "residual"), key=lambda n: nets[n]["units"])
    plain = [n for n in nets if nets[n]["kind"] == "plain"]

    def family(name: str) -> str | None:
        return nets[name].get("family")

    def ratio(a: str, b: str) -> float:
        return nets[a]["mean_std"]["mean"] / nets[b]["mean_std"]["mean"]

    def by_seed(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(nets[a]["mean_std_by_seed"], nets[b]["mean_std_by_seed"])]

    pairs = [
        {"units": nets[r]["units"], "residual": r, "plain": p, "ratio": ratio(r, p), "by_seed": by_seed(r, p)}
        for r in residual
        for p in plain
        if nets[p]["units"] == nets[r]["units"] and family(p) == family(r)
    ]
    depth = [
        {"shallower": a, "deeper": b, "ratio": ratio(b, a), "by_seed": by_seed(b, a)}
        for kin in dict.fromkeys(map(family, residual))
        for a, b in itertools.pairwise([n for n in residual if family(n) == kin])
        if nets[b]["units"] > nets[a]["units"]
    ]
    return {"pairs": pairs, "depth": depth}


def judge(numbers: dict[str, Any]) -> Verdict:
    nets = numbers["nets"]
    checks = [
        Check(
            "residual_over_plain",
            f"{p['residual']}'s mean response std over {p['plain']}'s",
            tuple(p["by_seed"]),
            THRESHOLDS["residual_over_plain"],
        )
        for p in numbers["pairs"]
    ] + [
        Check(
            "deeper_over_shallower",
            f"{d['deeper']}'s mean response std over {d['shallower']}'s",
            tuple(d["by_seed"]),
            THRESHOLDS["deeper_over_shallower"],
        )
        for d in numbers["depth"]
    ]
    found = ", ".join(f"{label} {fmt(net['mean_std'])}" for label, net in nets.items())
    moving = {}
    for p in numbers["pairs"]:
        a, b = nets[p["residual"]]["over_training"], nets[p["plain"]]["over_training"]
        if a["steps"] == b["steps"]:
            ratios = [x / y if x is not None and y else None for x, y in zip(a["values"], b["values"])]
            label = f"{p['residual']}/{p['plain']}"
            moving[label] = settling(a["steps"], ratios, quantity="response-std ratio", threshold=1.0)
    return judged(
        checks,
        found=f"mean response std {found}" if nets else "",
        missing="no residual/plain pair with equal unit counts and no two ResNet depths were measured",
        settling=moving,
        trained=numbers.get("trained", ()),
    )


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    nets = numbers["nets"]
    rows = [
        "| net | kind | units | test error (%) | mean response std | smallest | largest |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, net in nets.items():
        error = net.get("test_error")
        rows.append(
            f"| {label} | {net['kind']} | {net['units']} | {'-' if error is None else f'{error:.2f}'} | "
            f"{fmt(net['mean_std'])} | {min(net['sorted_std']):.3g} | {max(net['sorted_std']):.3g} |"
        )
    if numbers["pairs"] or numbers["depth"]:
        rows += ["", "| comparison | ratio of mean response std |", "|---|---|"]
        rows += [f"| {p['residual']} / {p['plain']} | {p['ratio']:.3f} |" for p in numbers["pairs"]]
        rows += [f"| {d['deeper']} / {d['shallower']} | {d['ratio']:.3f} |" for d in numbers["depth"]]
    rows += over_training_rows(nets, "mean response std")
    return "\n".join(rows), [_figure(numbers, out)]


def _figure(numbers: dict[str, Any], out: Path) -> Path:
    figure, axes = new_figure(12.5, 4.2, cols=2)
    by_layer, by_size = axes[0]
    for label, net in numbers["nets"].items():
        style = "-" if net["kind"] == "residual" else "--"
        stds = [number(layer["std"]["mean"]) for layer in net["layers"]]
        by_layer.plot(range(1, len(stds) + 1), stds, style, marker=".", label=label)
        by_size.plot(range(1, len(stds) + 1), [number(v) for v in net["sorted_std"]], style, marker=".", label=label)
    by_layer.set(title="(a) in forward order", xlabel="unit (original order)", ylabel="std of branch response")
    by_size.set(title="(b) sorted by magnitude", xlabel="unit (sorted by std)", ylabel="std of branch response")
    for ax in (by_layer, by_size):
        ax.grid(alpha=0.3)
    legend_outside(by_size)
    what = "Std of each residual branch's response, dashed: plain nets (He et al. 2015, Fig. 7)"
    titled(figure, what, trained_for(numbers["trained"]))
    return save_figure(figure, out, f"{NAME}-std")
