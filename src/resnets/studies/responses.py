"""Layer responses of trained nets: residual branches respond less than plain layers (He et al. 2015, Fig. 7).

He, Zhang, Ren & Sun 2015 ("Deep Residual Learning for Image Recognition", Sec. 4.2 and Fig. 7) measure the
standard deviation of each 3x3 layer's response (after BN, before the nonlinearity and the addition) on
CIFAR-10 and find it smaller in ResNets than in their plain twins, and smaller in deeper ResNets: residual
functions stay closer to zero, as the reformulation intended.

Here the response of a unit is its branch F(x) as the shared unit interface hands it to taps: after the
branch's last BN and before the residual addition (for a plain unit, the same tensor before its ReLU). Its
standard deviation is taken over every element (samples, channels, positions) of a seeded random subset of
the test split, in eval mode with the run's weights and precision; each seed draws another subset.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch

from resnets.errors import ConfigError
from resnets.models import SkipNetwork, get_model_entry, list_models
from resnets.runs import Run
from resnets.studies.common import (
    BN_EVAL_MODE,
    StudyOptions,
    StudyResult,
    fmt,
    new_figure,
    progress,
    run_label,
    save_figure,
    seeds,
    spread,
    subset_batches,
)
from resnets.studies.trained import DEFAULT_DATA, DEFAULT_STEPS, PLAIN, RESIDUAL, trained_runs

NAME = "responses"
CLAIM = (
    "The standard deviation of the layer responses (each residual branch after its last BN, before the addition) "
    "is smaller in ResNets than in their plain counterparts, and smaller in deeper ResNets: residual functions "
    "are generally closer to zero (He, Zhang, Ren & Sun 2015, 'Deep Residual Learning for Image Recognition', "
    "Sec. 4.2, Fig. 7)."
)
DEFAULT_SAMPLES = 500  # test images per seed
RESPONSE = (
    "std over all elements (samples, channels, positions) of each unit's branch F(x) after its last BN, before "
    "the addition (plain units: before their ReLU); channel_std: the mean over channels of each channel's std"
)


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


def _models(options: StudyOptions) -> list[str]:
    """--model names, plus resnetD and plainD for each --depths D; default resnet20 against plain20."""
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
    return models or [RESIDUAL, PLAIN]


def _summary(run: Run) -> dict[str, Any]:
    path = run.path / "summary.json" if run.path else None
    if path is None or not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {"steps": summary.get("steps"), "test_error": summary.get("test_error")}


def measure(options: StudyOptions, runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Per run: its kind (residual or plain), unit count and per-layer response stds over the seeded subsets."""
    samples = options.pick("samples", DEFAULT_SAMPLES)
    nets: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    work = [(run, seed) for run in runs for seed in seeds(options)]
    per_seed: dict[int, list[list[dict]]] = {}
    for run, seed in progress(work, desc=NAME, quiet=options.quiet):
        batches = subset_batches(run, samples, seed)
        per_seed.setdefault(id(run), []).append(response_stds(run.model, batches, run.precision))
    for run in runs:
        nets[run_label(run, taken)] = {
            "model": run.record.model,
            "family": get_model_entry(run.record.model).family,
            "run": str(run.path or run.checkpoint),
            "checkpoint": run.checkpoint.stem,
            **_summary(run),
            **describe(run.model, per_seed[id(run)]),
        }
    return nets


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
    return {
        "kind": "residual" if any(info.has_shortcut for info in blocks) else "plain",
        "units": len(blocks),
        "layers": layers,
        "mean_std": spread(sum(r["std"] for r in m) / len(m) for m in measured),
        "sorted_std": sorted((layer["std"]["mean"] for layer in layers), reverse=True),
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

    pairs = [
        {"units": nets[r]["units"], "residual": r, "plain": p, "ratio": ratio(r, p)}
        for r in residual
        for p in plain
        if nets[p]["units"] == nets[r]["units"] and family(p) == family(r)
    ]
    depth = [
        {"shallower": a, "deeper": b, "ratio": ratio(b, a)}
        for kin in dict.fromkeys(map(family, residual))
        for a, b in itertools.pairwise([n for n in residual if family(n) == kin])
        if nets[b]["units"] > nets[a]["units"]
    ]
    return {"pairs": pairs, "depth": depth}


def _figure(nets: dict[str, dict[str, Any]], out: str) -> Any:
    figure, axes = new_figure(11, 4.2, cols=2)
    by_layer, by_size = axes[0]
    for label, net in nets.items():
        style = "-" if net["kind"] == "residual" else "--"
        stds = [layer["std"]["mean"] for layer in net["layers"]]
        by_layer.plot(range(1, len(stds) + 1), stds, style, marker=".", label=label)
        by_size.plot(range(1, len(stds) + 1), net["sorted_std"], style, marker=".", label=label)
    by_layer.set(title="(a) in forward order", xlabel="unit (original order)", ylabel="std of branch response")
    by_size.set(title="(b) sorted by magnitude", xlabel="unit (sorted by std)", ylabel="std of branch response")
    for ax in (by_layer, by_size):
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(figure, out, f"{NAME}-std")


def _verdict(nets: dict[str, dict], compared: dict[str, list[dict]]) -> tuple[str, bool | None]:
    parts, checks = [], []
    for pair in compared["pairs"]:
        r, p = pair["residual"], pair["plain"]
        checks.append(pair["ratio"] < 1)
        parts.append(
            f"{r}'s branches respond with mean std {nets[r]['mean_std']['mean']:.3g} against "
            f"{nets[p]['mean_std']['mean']:.3g} for {p} (ratio {pair['ratio']:.2f})"
        )
    for step in compared["depth"]:
        a, b = step["shallower"], step["deeper"]
        checks.append(step["ratio"] < 1)
        parts.append(f"{b} responds {'less' if step['ratio'] < 1 else 'more'} than {a} (ratio {step['ratio']:.2f})")
    if not checks:
        return (
            "Undecided: no residual/plain pair with equal unit counts and no two ResNet depths were measured.",
            None,
        )
    supported = all(checks)
    head = "Supported" if supported else "Not supported"
    return f"{head}: {'; '.join(parts)}.", supported


def run(options: StudyOptions) -> StudyResult:
    """Measure the branch responses of trained runs (default: resnet20 and plain20, short runs)."""
    models = _models(options) if not options.runs else []
    steps = options.pick("steps", DEFAULT_STEPS)
    runs = trained_runs(options, models, steps=steps)
    nets = measure(options, runs)
    compared = compare(nets)
    verdict, supported = _verdict(nets, compared)
    figure = _figure(nets, options.out)
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
    if compared["pairs"] or compared["depth"]:
        rows += ["", "| comparison | ratio of mean response std |", "|---|---|"]
        rows += [f"| {p['residual']} / {p['plain']} | {p['ratio']:.3f} |" for p in compared["pairs"]]
        rows += [f"| {d['deeper']} / {d['shallower']} | {d['ratio']:.3f} |" for d in compared["depth"]]
    settings = {
        "measured_on": "trained runs, eval mode, the run's weights and precision",
        "runs": [net["run"] for net in nets.values()],
        "checkpoints": [net["checkpoint"] for net in nets.values()],
        "models": [net["model"] for net in nets.values()],
        "default_run_steps": None if options.runs else steps,
        "data": "each run's recorded data" if options.runs else options.data or DEFAULT_DATA,
        "split": "test",
        "samples": options.pick("samples", DEFAULT_SAMPLES),
        "seeds": len(seeds(options)),
        "subset": "a random test subset drawn without replacement per seed (torch.randperm seeded with the seed)",
        "bn": BN_EVAL_MODE,
        "response": RESPONSE,
        "device": options.device,
    }
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings=settings,
        numbers={"nets": nets, **compared},
        table="\n".join(rows),
        figures=[figure],
    )
