"""``resnets study signal``: forward and gradient variance along depth at initialisation, under residual scaling.

A residual unit adds its branch to its input: x_{l+1} = x_l + s F(x_l). Where F(x_l) is uncorrelated with
x_l (zero-mean weights make it so in expectation), variances add, Var(x_{l+1}) = Var(x_l) + s^2 Var(F), and a
branch that preserves its input's second moment (He initialisation, no normalisation) multiplies the variance
by (1 + s^2) per unit: prod (1 + s_l^2) <= exp(sum s_l^2), exponential in depth at s = 1, bounded by e at
s = 1/sqrt(L) ((1 + 1/L)^L < e), small at the 0.1-0.3 of Inception-ResNet (Szegedy et al. 2016). Hanin &
Rolnick 2018 ("How to Start Training") prove that ResNets avoid exploding mean activation length only with
correctly scaled residual modules (the form of their condition is not checked here: see THRESHOLDS); with
normalisation in the branch, Var(F) is held near 1 instead and the stream's variance grows linearly, so the
identity path carries most of a deep unit's output (Balduzzi et al. 2017 on the shattering this prevents).

Measured on one batch per seed, per unit l (in the order of ``residual_blocks()``), all over every element of
the tensor (batch, channels, positions):

- ``input_mean``, ``input_var``: mean and population variance of the unit's input x_l (a forward pre-hook);
  ``output_var``: variance of its output.
- ``grad_var``: mean square of dL/dx_l, the gradient at the unit's input, with L the cross-entropy summed over
  the batch (each image's own loss; its variance about zero, as Glorot & Bengio 2010 and He et al. 2015 use
  it: at initialisation the gradient's expected value is zero). ``out_grad_var``: the same at the last unit's
  output.
- ``identity_share``: the share of the last unit's sum z = shortcut + s F(x) (before the unit's
  post-activation, if any) whose variance arrives through the shortcut, defined as
  Var(shortcut) / (Var(shortcut) + Var(s F)): exactly Var(shortcut) / Var(z) when the two terms are
  uncorrelated, and ``correlation`` (their correlation coefficient) says how close to that they are. The
  shortcut of a deep unit is itself the sum of all the earlier identity paths, so the share says how much of
  the signal reaching the head skipped the last branch. Units without a shortcut have none (null).

Headlines per net, normalisation, scale and depth, mean and spread over seeds: ``forward_growth`` =
output_var(last unit) / input_var(first unit); ``gradient_growth`` = grad_var(first unit's input) /
out_grad_var (last unit's output); the last unit's ``identity_share``. Scales are applied with
``info.scaled`` on every unit that has a shortcut, on one set of weights per seed, so scales are compared on
the same nets; 1/sqrt(L) uses L = the number of units (as ``residual_scale="inv_sqrt_depth"`` does). BN runs
on batch statistics; ``norm="identity"`` removes it.

A unit whose forward overwrites its own input in place (an in-place activation straight on the input, as a
pre-activation block does when its norm is the identity) no longer adds its branch to its input: its
shortcut carries the overwritten tensor. Such units are listed (``input_overwritten``), marked in the table
and left out of the verdict, since what they compute is not the residual sum the claim is about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.models import SkipNetwork, get_model_entry
from resnets.studies.common import number, spread
from resnets.studies.contract import INTS, Context, InstrumentOptions, models_option, option
from resnets.studies.figures import UNTRAINED, new_figure, save_figure, titled
from resnets.studies.untrained import BN_BATCH, StudyData, batch_statistics, build_near
from resnets.studies.verdict import Check, Threshold, Verdict, judged

NAME = "signal"
CLAIM = (
    "At initialisation the variances of a residual unit's input and branch add up, so without normalisation a "
    "ResNet's forward and gradient variance grow exponentially with depth at residual scale 1, while scaling "
    "the branches by 1/sqrt(L) keeps them bounded (Hanin & Rolnick 2018, 'How to Start Training'); small "
    "constant scales of 0.1-0.3 (Szegedy et al. 2016, Inception-ResNet) and normalisation tame the growth, "
    "and then most of a deep unit's output arrives through the identity paths (Balduzzi et al. 2017)."
)
#: (label, registered model, options): the post-activation ResNet of He et al. 2015 and its pre-activation twin.
HANIN = "Hanin & Rolnick 2018, 'How to Start Training'"
#: What is and is not verified of Hanin & Rolnick 2018 (their theorem's text was not available to us): their
#: abstract says that for ResNets the exploding or vanishing mean activation length is avoided "by correctly
#: scaling the residual modules". The lines below follow from the variance sum of the module docstring, one
#: derivation for both: variance-preserving branches multiply the stream's second moment by (1 + s^2) per unit,
#: so the growth is prod (1 + s_l^2) <= exp(sum s_l^2), exponential in depth at s = 1 and below e at 1/sqrt(L)
#: (summed squares 1). Whether their condition is stated on the summed scales or on the summed squares (which
#: depends on whether their scale multiplies the module's output or its variance) is unverified.
THRESHOLDS = {
    "explodes": Threshold(
        10.0,
        above=True,
        unit="x",
        paper="for ResNets the first failure mode, a mean activation length that explodes or vanishes with depth, "
        "is avoided 'by correctly scaling the residual modules' (abstract; with scale 1 in every unit it is not); "
        "the variance sum gives prod (1 + s^2) = 2^L for L variance-preserving units at s = 1",
        source=f"{HANIN}, abstract and Sec. 4 (the exact statement of their theorem unverified here)",
        why="how many times the growth through the net (forward, or gradient) rose from the shallowest to the "
        "deepest net of the sweep, at residual scale 1 without normalisation: exponential in depth",
    ),
    "bounded": Threshold(
        math.log10(2.0),
        above=False,
        unit="decades",
        paper="correctly scaled residual modules avoid the exploding mean length (abstract); the variance sum "
        "gives prod (1 + 1/L) < e at s = 1/sqrt(L) per unit, whose summed squares are 1 at every depth",
        source=f"{HANIN}, abstract and Sec. 4 (the exact statement of their theorem unverified here)",
        why="|log10| of the change of the growth over the sweep at scale 1/sqrt(L): below log10(2), less than "
        "twofold, as a growth below e at every depth allows",
    ),
}
DEFAULT_NETS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("resnet (post-act)", "resnet20", {}),
    ("resnet (pre-act)", "resnet20", {"block": "preact_basic"}),
)
SCALES: tuple[float | str, ...] = (1.0, 0.3, 0.1, "inv_sqrt_depth")
NORMS = ("batchnorm", "identity")
EXPLODES = 10.0  # growth rising tenfold over the depth sweep: exponential growth
BOUNDED = 2.0  # growth changing less than twofold over the depth sweep: bounded


@dataclass(frozen=True)
class Options(InstrumentOptions):
    models: tuple[str, ...] = models_option(
        "a registered model to measure instead of the default post- and pre-activation resnet20"
    )
    depths: tuple[int, ...] = option((20, 56, 110), "depth sweep in weighted layers (each family's nearest)", **INTS)
    samples: int = option(32, "images per batch (one batch per seed)")
    seeds: int = option(3, "fresh nets and batches per depth")


@dataclass
class Profile:
    """What one forward and backward pass showed at each unit (see the module docstring for the definitions)."""

    names: list[str] = field(default_factory=list)
    scale: float = 1.0
    input_mean: list[float] = field(default_factory=list)
    input_var: list[float] = field(default_factory=list)
    output_var: list[float] = field(default_factory=list)
    grad_var: list[float] = field(default_factory=list)
    out_grad_var: float = math.nan
    shortcut_var: list[float | None] = field(default_factory=list)
    branch_var: list[float | None] = field(default_factory=list)  # Var(s F(x)), after scaling
    identity_share: list[float | None] = field(default_factory=list)
    correlation: list[float | None] = field(default_factory=list)
    loss: float = math.nan
    mutated: list[str] = field(default_factory=list)  # units whose forward overwrote their own input in place

    @property
    def forward_growth(self) -> float:
        return self.output_var[-1] / self.input_var[0]

    @property
    def gradient_growth(self) -> float:
        return self.grad_var[0] / self.out_grad_var


def scale_value(scale: float | str, units: int) -> float:
    """The residual scale a label stands for: a number, or 1/sqrt(L) for ``inv_sqrt_depth`` with L units."""
    return 1.0 / math.sqrt(units) if scale == "inv_sqrt_depth" else float(scale)


def _moments(t: torch.Tensor) -> tuple[float, float]:
    t = t.detach().double()
    return float(t.mean()), float(t.var(unbiased=False))


def unit_profile(
    model: SkipNetwork, inputs: torch.Tensor, targets: torch.Tensor, scale: float | str | None = None
) -> Profile:
    """Forward and backward statistics at every unit of ``model`` for one batch (the model's modes as they are).

    ``scale`` (a number or ``"inv_sqrt_depth"``) is set on every unit with a shortcut for this pass; None keeps
    the units' own ``residual_scale``.
    """
    blocks = model.residual_blocks()
    profile = Profile(names=[info.name for info in blocks])
    factor = None if scale is None else scale_value(scale, len(blocks))
    profile.scale = factor if factor is not None else blocks[-1].unit.residual_scale
    seen_inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    terms: dict[int, tuple[float | None, float | None, float | None]] = {}

    def tap_for(index: int, info: Any) -> Any:
        def tap(branch: torch.Tensor, shortcut: torch.Tensor | None) -> None:
            if shortcut is None or shortcut.shape != branch.shape:
                terms[index] = (None, None, None)
                return
            b = branch.detach().double() * info.unit.residual_scale
            s = shortcut.detach().double()
            cov = float(((b - b.mean()) * (s - s.mean())).mean())
            terms[index] = (float(s.var(unbiased=False)), float(b.var(unbiased=False)), cov)

        return tap

    versions: dict[int, int] = {}
    names = {id(info.module): info.name for info in blocks}

    def pre_hook(module: Any, args: tuple) -> None:
        seen_inputs.append(args[0])
        versions[id(module)] = args[0]._version
        mean, var = _moments(args[0])
        profile.input_mean.append(mean)
        profile.input_var.append(var)

    def post_hook(module: Any, args: tuple, output: torch.Tensor) -> None:
        if args[0]._version != versions[id(module)]:  # an in-place op overwrote the input the shortcut carries
            profile.mutated.append(names[id(module)])
        outputs.append(output)
        profile.output_var.append(_moments(output)[1])

    with ExitStack() as stack:
        for info in blocks:
            if factor is not None and info.has_shortcut:
                stack.enter_context(info.scaled(factor))
            stack.enter_context(info.unit.tapped(tap_for(info.index, info)))
            for handle in (
                info.module.register_forward_pre_hook(pre_hook),
                info.module.register_forward_hook(post_hook),
            ):
                stack.callback(handle.remove)
        # the input too may reach a unit directly (nets without a stem), so it takes a gradient as well; a clone
        # of a leaf, so that a unit may still act on it in place
        start = inputs.detach().requires_grad_().clone() if inputs.is_floating_point() else inputs
        logits = model(start)
    loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, reduction="sum")
    profile.loss = float(loss.detach())
    wanted = [t for t in [*seen_inputs, outputs[-1]] if t.requires_grad]
    grads = dict(zip(map(id, wanted), torch.autograd.grad(loss, wanted, allow_unused=True)))

    def mean_square(t: torch.Tensor) -> float:
        g = grads.get(id(t))
        return math.nan if g is None else float(g.detach().double().square().mean())

    profile.grad_var = [mean_square(t) for t in seen_inputs]
    profile.out_grad_var = mean_square(outputs[-1])
    for info in blocks:
        var_s, var_b, cov = terms.get(info.index, (None, None, None))
        profile.shortcut_var.append(var_s)
        profile.branch_var.append(var_b)
        total = None if var_s is None else var_s + var_b
        profile.identity_share.append(None if total is None or total == 0 else var_s / total)
        denominator = None if var_s is None else math.sqrt(var_s * var_b)
        profile.correlation.append(None if not denominator else cov / denominator)
    return profile


# -- the study -----------------------------------------------------------------------------------------------


def _label(scale: float | str) -> str:
    return "1/sqrt(L)" if scale == "inv_sqrt_depth" else f"{float(scale):g}"


def _nets(options: Options) -> list[tuple[str, str, dict[str, Any]]]:
    if options.models:
        return [(name, name, {}) for name in options.models]
    return list(DEFAULT_NETS)


def _norms(name: str) -> tuple[str | None, ...]:
    """With and without normalisation where the model has a ``norm`` option; else its own layers only."""
    return NORMS if "norm" in get_model_entry(name).options() else (None,)


def _mean_columns(rows: Sequence[Sequence[float | None]]) -> list[float | None]:
    out: list[float | None] = []
    for column in zip(*rows):
        values = [v for v in column if v is not None and math.isfinite(v)]
        out.append(sum(values) / len(values) if values else None)
    return out


def _measure(options: Options, context: Context, data: StudyData) -> dict:
    """numbers[net][norm][scale][depth]: per-unit means over seeds and the headline spreads."""
    results: dict[str, Any] = {}
    samples = options.samples
    jobs = [
        (net, norm, d, s)
        for net in _nets(options)
        for norm in _norms(net[1])
        for d in options.depths
        for s in range(options.seeds)
    ]
    collected: dict[tuple, list[Profile]] = {}
    for (label, name, extra), norm, depth, seed in context.progress(jobs, "signal"):
        model_options = dict(extra, **({} if norm is None else {"norm": norm}), **data.shapes(name))
        model, actual = build_near(name, depth, seed, **model_options)
        model.to(context.device)
        x, y = data.batch(model, samples, seed, context.device)
        with batch_statistics(model):
            for scale in SCALES:
                profile = unit_profile(model, x, y, scale)
                collected.setdefault((label, str(norm or "own"), _label(scale), actual), []).append(profile)
    for (label, norm, scale, depth), profiles in collected.items():
        summary = {
            "scale_value": profiles[0].scale,
            "units": profiles[0].names,
            "forward_growth": spread(p.forward_growth for p in profiles),
            "gradient_growth": spread(p.gradient_growth for p in profiles),
            "last_identity_share": spread(p.identity_share[-1] for p in profiles if p.identity_share[-1] is not None),
            "last_correlation": spread(p.correlation[-1] for p in profiles if p.correlation[-1] is not None),
            "loss_per_image": spread(p.loss / samples for p in profiles),
            "per_seed_forward_growth": [p.forward_growth for p in profiles],
            "per_seed_gradient_growth": [p.gradient_growth for p in profiles],
            "input_overwritten": sorted({name for p in profiles for name in p.mutated}),
        }
        for key in ("input_mean", "input_var", "output_var", "grad_var", "identity_share", "correlation"):
            summary[key] = _mean_columns([getattr(p, key) for p in profiles])
        results.setdefault(label, {}).setdefault(norm, {}).setdefault(scale, {})[str(depth)] = summary
    return results


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Unit statistics at initialisation over nets, normalisation, residual scales, depths and seeds."""
    data = StudyData.load(context)
    return {
        "settings": {
            "nets": [{"label": label, "model": name, "options": extra} for label, name, extra in _nets(options)],
            "norms": list(NORMS),
            "scales": [_label(s) for s in SCALES],
            "scaling": "info.scaled(s) on every unit with a shortcut; 1/sqrt(L) with L = number of units",
            "inputs": data.description,
            "loss": "cross-entropy summed over the batch (gradients per image)",
            "bn": BN_BATCH,
            "verdict_on": "norm=identity: forward and gradient growth must rise > "
            f"{EXPLODES:g}x over the depth sweep at scale 1 and change < {BOUNDED:g}x at 1/sqrt(L); the BN, 0.1-0.3 "
            "and identity-share numbers are reported, not judged",
        },
        "depths": list(options.depths),
        "profiles": _measure(options, context, data),
    }


def _changes(by_depth: dict[str, dict], key: str) -> list[float | None]:
    """Per seed: how many times ``key`` grew from the shallowest to the deepest depth (seeds paired by index)."""
    depths = sorted(by_depth, key=int)
    low, high = by_depth[depths[0]][f"per_seed_{key}"], by_depth[depths[-1]][f"per_seed_{key}"]
    return [None if a is None or b is None or a <= 0 else b / a for a, b in zip(low, high)]


def judge(numbers: dict[str, Any]) -> Verdict:
    checks, said, broken = [], [], []
    for label, norms in numbers["profiles"].items():
        if "identity" not in norms or len(next(iter(norms["identity"].values()))) < 2:
            continue
        plain = norms["identity"]
        if any(entry["input_overwritten"] for scale in ("1", "1/sqrt(L)") for entry in plain[scale].values()):
            broken.append(label)
            continue
        for key, what in (("forward_growth", "forward"), ("gradient_growth", "gradient")):
            at_one, at_inv = _changes(plain["1"], key), _changes(plain["1/sqrt(L)"], key)
            checks += [
                Check(
                    "explodes",
                    f"{label}: change of the {what} growth over the sweep at scale 1",
                    tuple(at_one),
                    THRESHOLDS["explodes"],
                ),
                Check(
                    "bounded",
                    f"{label}: |log10| of the change of the {what} growth at scale 1/sqrt(L)",
                    tuple(None if c is None else abs(math.log10(c)) for c in at_inv),
                    THRESHOLDS["bounded"],
                ),
            ]
        said.append(label)
    notes = [f"{', '.join(broken)} left out: its units overwrite their input in place"] if broken else []
    found = f"without normalisation, the variance growth through {', '.join(said)} was followed over the depth sweep"
    return judged(
        checks,
        found=found if said else "",
        notes=notes,
        missing="no net was measured without normalisation at two or more depths",
    )


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    results = numbers["profiles"]
    figures = [
        _growth_figure(results, out),
        _along_depth(
            results,
            [("input_var", "Var(unit input)", True), ("input_mean", "mean(unit input)", False)],
            out,
            "forward-along-depth",
            "Unit inputs along the deepest net (mean over seeds)",
        ),
        _along_depth(
            results,
            [("grad_var", "mean (dL/d unit input)^2", True)],
            out,
            "gradient-along-depth",
            "Gradient at each unit's input along the deepest net (mean over seeds)",
        ),
        _along_depth(
            results,
            [("identity_share", "Var(shortcut) / (Var(shortcut) + Var(sF))", False)],
            out,
            "identity-share",
            "Share of each unit's sum arriving through the shortcut (mean over seeds)",
        ),
    ]
    return _table(results, numbers["depths"]), figures


def _table(results: dict, depths: Sequence[int]) -> str:
    """One row per net, norm and scale; growth at each depth of the sweep (a family's nearest depth)."""
    head = " | ".join(f"Var growth d={d}" for d in depths) + " | " + " | ".join(f"grad growth d={d}" for d in depths)
    lines = [f"| net | norm | scale | {head} | identity share, last unit (deepest) |"]
    lines.append("|---" * (4 + 2 * len(depths)) + "|")
    for label, norms in results.items():
        for norm, scales in norms.items():
            for scale, by_depth in scales.items():
                shown = sorted(by_depth, key=int)
                fwd = " | ".join(f"{number(by_depth[d]['forward_growth']['mean']):.3g}" for d in shown)
                grad = " | ".join(f"{number(by_depth[d]['gradient_growth']['mean']):.3g}" for d in shown)
                share = by_depth[shown[-1]]["last_identity_share"]
                mark = " †" if any(entry["input_overwritten"] for entry in by_depth.values()) else ""
                lines.append(
                    f"| {label} | {norm} | {scale}{mark} | {fwd} | {grad} | "
                    f"{number(share['mean']):.3f} ± {number(share['std']):.2g} |"
                )
    lines.append("")
    if any("†" in line for line in lines):
        note = "† its units overwrite their own input in place, so the shortcut carries the overwritten tensor"
        lines += [note + " and the unit is not a residual sum; left out of the verdict.", ""]
    lines.append(
        "Growth: Var(last unit's output) / Var(first unit's input), and mean-square gradient at the first "
        "unit's input / at the last unit's output; means over seeds (spreads in the JSON)."
    )
    return "\n".join(lines)


def _grid(results: dict) -> tuple[list[str], list[str]]:
    labels = list(results)
    norms = sorted({norm for by_norm in results.values() for norm in by_norm})
    return labels, norms


def _panels(rows: int, cols: int, width: float, height: float) -> tuple[Any, list[list[Any]]]:
    """A figure and its axes as rows of columns, whatever their number."""
    figure, axes = new_figure(width * cols, height * rows, cols=cols, rows=rows)
    return figure, [[axes]] if rows * cols == 1 else [list(row) for row in axes]


def _along_depth(results: dict, keys: Sequence[tuple[str, str, bool]], out: Path, name: str, title: str) -> Path:
    """One panel per (net, norm, key): ``key`` per unit at the deepest depth, one line per scale."""
    labels, norms = _grid(results)
    rows = [(norm, key) for norm in norms for key in keys]
    figure, grid = _panels(len(rows), len(labels), 4.2, 3.0)
    for r, (norm, (key, ylabel, log)) in enumerate(rows):
        for c, label in enumerate(labels):
            ax = grid[r][c]
            scales = results[label].get(norm, {})
            for scale, by_depth in scales.items():
                deepest = max(by_depth, key=int)
                values = [math.nan if v is None else v for v in by_depth[deepest][key]]
                ax.plot(range(len(values)), values, label=f"scale {scale}")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("unit (forward order)")
            ax.set_ylabel(ylabel)
            depth = max(next(iter(scales.values())), key=int) if scales else "?"
            broken = any(e["input_overwritten"] for by_depth in scales.values() for e in by_depth.values())
            ax.set_title(
                f"{label}, norm={norm}, depth {depth}" + (" (input overwritten †)" if broken else ""), fontsize=9
            )
            ax.legend(fontsize=7)
    titled(figure, title, UNTRAINED)
    return save_figure(figure, out, f"{NAME}-{name}")


def _growth_figure(results: dict, out: Path) -> Path:
    labels, norms = _grid(results)
    figure, grid = _panels(len(norms), len(labels), 4.2, 3.2)
    for r, norm in enumerate(norms):
        for c, label in enumerate(labels):
            ax = grid[r][c]
            for scale, by_depth in results[label].get(norm, {}).items():
                depths = sorted(by_depth, key=int)
                stats = [by_depth[d]["forward_growth"] for d in depths]
                ax.errorbar(
                    [int(d) for d in depths],
                    [number(s["mean"]) for s in stats],
                    yerr=[number(s["std"]) for s in stats],
                    marker="o",
                    capsize=3,
                    label=f"scale {scale}",
                )
            ax.set_yscale("log")
            ax.set_xlabel("depth (weighted layers)")
            ax.set_ylabel("Var(last output) / Var(first input)")
            ax.set_title(f"{label}, norm={norm}", fontsize=9)
            ax.legend(fontsize=7)
    titled(figure, "Forward variance growth through the net against depth (mean ± std over seeds)", UNTRAINED)
    return save_figure(figure, out, f"{NAME}-growth-vs-depth")
