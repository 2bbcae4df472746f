"""``resnets study shattered``: do input gradients of deep nets look like white noise along a line of inputs?
(Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, "The Shattered Gradients Problem: If resnets are the
answer, then what is the question?").

The paper's 1-D setting: fully connected ReLU nets, 200 units wide, fed 256 equally spaced inputs x in [-2, 2];
the gradient df/dx of the scalar output along that line is a brown-noise-like walk for a shallow net and turns
into white noise in a deep plain net, while nets with skip connections keep it correlated. We build those nets
from the registry (``resmlp_plain_20`` and ``resmlp_identity_20``, with and without BatchNorm, and
``highway_fc``, each at every depth through ``create_at_depth``) with He-normal weights as in the paper, and the
same measure on convnets at initialisation, along the straight line between two images: plain, residual (with
and without BN) and the looks-linear CReLU net of the paper's section 5 (``plain_ll_cifar20``) beside the same
CReLU net without the mirrored init (``plain_crelu_cifar56``). No registered MLP is looks-linear, so the convnets
carry that comparison.

The measure: for gradients g_1..g_N (rows; vectors for images) at the N points, the normalised autocorrelation
at lag h is sum_i <g_i, g_{i+h}> / sqrt(sum_i |g_i|^2 sum_i |g_{i+h}|^2), the empirical form of the paper's
gradient correlation between nearby inputs (uncentred: over random weights the gradient has mean zero). It is
1 for a constant gradient (an affine net), about 0 for white noise and sqrt((N-h+1)/(N+h+1)) in expectation for
brown noise (a random walk), the two references the paper draws. The usual centred ACF is reported beside it.

BatchNorm: the nets are untrained, so BN's running statistics are set from the measured points themselves (one
train-mode pass with a cumulative average), then the net is evaluated in eval mode. Each point's gradient is then
the gradient of one fixed function, as the autocorrelation needs; a train-mode pass would mix the points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.data import load_data
from resnets.errors import ConfigError
from resnets.models import create_at_depth
from resnets.studies.common import number, spread
from resnets.studies.contract import INTS, Context, InstrumentOptions, option
from resnets.studies.figures import UNTRAINED, legend_outside, new_figure, save_figure, titled
from resnets.studies.plans import DEFAULT_DATA
from resnets.studies.verdict import Check, Threshold, Verdict, judged

NAME = "shattered"
CLAIM = (
    "The gradients of deep plain networks shatter: along a line of inputs, the correlation between the gradients "
    "at nearby points decays exponentially with depth until they resemble white noise, while in networks with "
    "skip connections it decays sublinearly and the gradients stay closer to brown noise; a looks-linear "
    "initialisation (CReLU with mirrored weights) keeps a deep plain net's gradients unshattered "
    "(Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, 'The Shattered Gradients Problem', ICML)."
)
BALDUZZI = "Balduzzi et al. 2017"
THRESHOLDS = {
    "plain_decays": Threshold(
        0.0,
        above=False,
        unit="",
        paper="Theorem 1 (feedforward ReLU nets, He initialisation, no BN): the gradients at two inputs have "
        "variance 1 and covariance 1/2^L, so their correlation falls as 2^-L with depth L; Fig. 1(b): a 24-layer "
        "feedforward net's gradient looks like white noise; Fig. 4(b): with batch normalisation the activation "
        "pattern of a depth-50 feedforward net breaks up as well",
        source=f"{BALDUZZI}, Sec. 3, Theorem 1, Fig. 1, 2 and 4(b)",
        why="our line: lag-1 autocorrelation at the deepest MLP minus at the shallowest (plain, with BN) below 0",
    ),
    "skips_resist": Threshold(
        0.0,
        above=True,
        unit="",
        paper="Theorem 3 (resnets with BN and residuals scaled by beta): correlation ~ 1/(beta sqrt(L)), "
        "sublinear in depth; Theorem 2 (resnets without BN, alpha = beta = 1): correlation (3/4)^L, exponential "
        "but slower than the feedforward 2^-L; Fig. 1(c): a 50-layer resnet's gradient keeps structure",
        source=f"{BALDUZZI}, Sec. 3, Theorems 2 and 3, Fig. 1(c) and 2",
        why="our line: lag-1 autocorrelation of the residual net minus the plain net's, at the deepest depth, above 0",
    ),
    "looks_linear": Threshold(
        0.999,
        above=True,
        unit="",
        paper="a looks-linear initialisation (CReLU with mirrored weights) makes the net linear at "
        "initialisation, so its gradient is the same at every input and does not shatter (abstract: it "
        "'prevents shattering'); no number",
        source=f"{BALDUZZI}, Sec. 5 (looks linear initialisation)",
        why="our line: lag-1 autocorrelation of the looks-linear convnet above 0.999 (1 for a constant gradient)",
    ),
    "mirror_matters": Threshold(
        0.0,
        above=True,
        unit="",
        paper="with mirrored weights (W, -W) on CReLU's two halves the layer computes W x, a linear map: the "
        "mirror, not CReLU alone, makes the net look linear; no number",
        source=f"{BALDUZZI}, Sec. 5",
        why="our line: lag-1 autocorrelation of the looks-linear convnet minus the same CReLU net without the "
        "mirror, above 0",
    ),
}
WIDTH = 200  # units per layer of the fully connected nets, as in the paper
MAX_LAG = 32
#: label -> (registered model, options); fully connected, 1-D input and one output
MLP_NETS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("resmlp_plain_20", {"norm": "identity"}),
    "plain+BN": ("resmlp_plain_20", {"norm": "batchnorm1d"}),
    "resnet": ("resmlp_identity_20", {"norm": "identity"}),
    "resnet+BN": ("resmlp_identity_20", {"norm": "batchnorm1d"}),
    "highway": ("highway_fc_10", {}),
}
#: label -> (registered model, options); convnets on the study's images
CONV_NETS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain+BN": ("plain20", {}),
    "resnet+BN": ("resnet20", {}),
    "resnet": ("resnet20", {"norm": "identity"}),
    "looks-linear": ("plain_ll_cifar20", {}),
    "CReLU, no mirror": ("plain_crelu_cifar56", {}),
}
BN_CALIBRATED = "running statistics set from the measured points (one train-mode pass), then eval mode"
SHOWN = (("plain+BN", "low"), ("plain+BN", "high"), ("resnet+BN", "high"), ("plain", "high"))  # traces in the figure


@dataclass(frozen=True)
class Options(InstrumentOptions):
    depths: tuple[int, ...] = option(
        (2, 5, 8, 10, 20, 50),
        "depths: the MLPs at each (hidden layers, the paper: 2 to 50), the convnets at each 6n+2 depth of 8 or more",
        **INTS,
    )
    samples: int = option(256, "points along the line (the paper: 256)")
    seeds: int = option(3, "fresh nets per depth (and image pairs for the convnets)")


def autocorrelation(gradients: torch.Tensor, lags: Sequence[int]) -> list[float]:
    """sum_i <g_i, g_{i+h}> / sqrt(sum_i |g_i|^2 sum_i |g_{i+h}|^2) for each lag h; rows of ``gradients`` are
    the points in order (any trailing shape is flattened)."""
    g = gradients.detach().double().reshape(len(gradients), -1)
    values = []
    for h in lags:
        if not 0 < h < len(g):
            raise ValueError(f"lag {h} needs 0 < lag < {len(g)} points")
        a, b = g[:-h], g[h:]
        values.append(float((a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt()))
    return values


def centred_autocorrelation(gradients: torch.Tensor, lag: int = 1) -> float:
    """The usual ACF: the same after subtracting the mean gradient; NaN for a constant gradient (0/0)."""
    g = gradients.detach().double().reshape(len(gradients), -1)
    g = g - g.mean(0)
    if not g.abs().max() > 1e-6 * gradients.detach().double().abs().max():  # constant up to rounding
        return math.nan
    return autocorrelation(g, [lag])[0]


def brown_autocorrelation(points: int, lag: int) -> float:
    """Expected sum_i W_i W_{i+h} over the root of the product of the expected sums of squares for a random walk
    W_i = e_1 + ... + e_i: sum_{i<=N-h} i / sqrt(sum_{i<=N-h} i * sum_{i>h} i) = sqrt((N-h+1) / (N+h+1))."""
    return math.sqrt((points - lag + 1) / (points + lag + 1))


def noise(points: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """White noise (independent N(0, 1)) or brown noise (its running sum), as the paper's references."""
    white = torch.randn(points, generator=generator, dtype=torch.float64)
    return white if kind == "white" else white.cumsum(0)


def calibrate_bn(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """BN running statistics := the statistics of ``inputs`` (cumulative average over one pass); eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if norms:
        model.train()
        with torch.no_grad():
            model(inputs)
    return model.eval()


def input_gradients(model: nn.Module, inputs: torch.Tensor, output: int = 0) -> torch.Tensor:
    """d f(x_i)[output] / d x_i at every point x_i (rows), with f in eval mode so that points do not interact."""
    if model.training:
        raise ValueError("input gradients per point need eval mode: train-mode BN mixes the points of a batch")
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(model(x)[:, output].sum(), x)
    return grad


def he_init_linear(model: nn.Module) -> nn.Module:
    """He-normal weights (variance 2 / fan-in) for every Linear, as the paper's nets; biases stay as built."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def line_points(points: int) -> torch.Tensor:
    """The paper's inputs: ``points`` equally spaced scalars in [-2, 2], as (points, 1)."""
    return torch.linspace(-2.0, 2.0, points).unsqueeze(1)


def image_line(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], points: int) -> torch.Tensor:
    """``points`` images on the segment from images[0] to images[1] (uint8, normalised as training does)."""
    shape = (1, -1, 1, 1)
    x = (images.float() / 255 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
    t = torch.linspace(0.0, 1.0, points).view(-1, 1, 1, 1)
    return (1 - t) * x[0:1] + t * x[1:2]  # (points, C, H, W)


def _mlp(label: str, depth: int) -> nn.Module:
    name, opts = MLP_NETS[label]
    layers = depth + 2 if name.startswith("highway") else depth  # highway depth counts projection and classifier
    return he_init_linear(create_at_depth(name, layers, in_channels=1, num_classes=1, width=WIDTH, **opts))


def _measure(model: nn.Module, points: torch.Tensor) -> tuple[list[float], float, torch.Tensor]:
    gradients = input_gradients(calibrate_bn(model, points), points)
    lags = range(1, min(MAX_LAG, len(points) - 1) + 1)
    return autocorrelation(gradients, lags), centred_autocorrelation(gradients), gradients


def _summary(runs: list[tuple[list[float], float]]) -> dict[str, Any]:
    return {
        "lag1": spread(acf[0] for acf, _ in runs),
        "lag1_by_seed": [acf[0] for acf, _ in runs],
        "centred_lag1": spread(c for _, c in runs if math.isfinite(c)),  # undefined (NaN) for constant gradients
        "acf": [spread(acf[h] for acf, _ in runs)["mean"] for h in range(len(runs[0][0]))],
    }


def measure(options: Options, context: Context) -> dict[str, Any]:
    n = options.samples
    if n < 3:
        raise ConfigError(f"shattered needs at least 3 points along the line (--samples), got {n}")
    device = torch.device(context.device)
    mlp_depths = [d for d in options.depths if d >= 2]
    conv_depths = [d for d in options.depths if d >= 8 and (d - 2) % 6 == 0]
    draws = list(range(options.seeds))
    shown = {f"{label}@{depth}" for label, which in SHOWN for depth in _ends(mlp_depths, which)}
    traces: dict[str, list[float]] = {}

    mlp: dict[str, dict[str, Any]] = {}
    x = line_points(n).to(device)
    jobs = [(label, d) for label in MLP_NETS for d in mlp_depths]
    for label, depth in context.progress(jobs, "shattered: MLPs"):
        measured = []
        for seed in draws:
            torch.manual_seed(seed)
            acf, centred, g = _measure(_mlp(label, depth).to(device), x)
            measured.append((acf, centred))
            if seed == draws[0] and f"{label}@{depth}" in shown:
                traces[f"{label}@{depth}"] = g.squeeze(1).cpu().tolist()
        mlp.setdefault(label, {})[str(depth)] = _summary(measured)

    conv: dict[str, dict[str, Any]] = {}
    bundle = load_data(context.data or DEFAULT_DATA, context.data_dir) if conv_depths else None
    if bundle is None or bundle.kind != "image":
        conv_depths = []  # none asked, or vector data: no convnets
        images, pairs = None, {}
    else:  # two images of the test split (of the training split where there is no test split), per seed
        images = bundle.test if bundle.test is not None and len(bundle.test) > 1 else bundle.train
        pairs = {s: torch.randperm(len(images), generator=torch.Generator().manual_seed(s))[:2] for s in draws}
    jobs = [(label, d) for label in CONV_NETS for d in conv_depths]
    for label, depth in context.progress(jobs, "shattered: convnets"):
        name, opts = CONV_NETS[label]
        measured = []
        for seed in draws:
            line = image_line(images.inputs[pairs[seed]], bundle.mean, bundle.std, n).to(device)
            torch.manual_seed(seed)
            model = create_at_depth(name, depth, in_channels=bundle.in_channels, num_classes=bundle.num_classes, **opts)
            acf, centred, _ = _measure(model.to(device), line)
            measured.append((acf, centred))
        conv.setdefault(label, {})[str(depth)] = _summary(measured)
    return {
        "settings": {
            "points": n,
            "mlp_nets": {k: f"{m} {o}" for k, (m, o) in MLP_NETS.items()},
            "mlp_depths": mlp_depths,
            "mlp_depth_means": "hidden layers after the input projection (highway_fc is built with depth + 2 weight "
            "layers, its depth field counting projection and classifier)",
            "mlp_width": WIDTH,
            "mlp_input": f"{n} scalars equally spaced in [-2, 2]; output: the single logit",
            "mlp_init": "He-normal Linear weights (variance 2/fan-in); biases as the registry builds them",
            "conv_nets": {k: f"{m} {o}" for k, (m, o) in CONV_NETS.items()},
            "conv_depths": conv_depths,
            "conv_input": f"{n} images on the segment between two {'test' if images is bundle.test else 'train'} "
            f"images of {bundle.name} (a random pair per seed); output: logit 0"
            if conv_depths
            else "none (no 6n+2 depth asked, or vector data)",
            "weights": "initialisation (untrained)",
            "bn": BN_CALIBRATED,
            "autocorrelation": "sum_i <g_i, g_{i+h}> / sqrt(sum_i |g_i|^2 sum_i |g_{i+h}|^2) (uncentred; the "
            "centred ACF beside it)",
            "max_lag": MAX_LAG,
        },
        "points": n,
        "seeds": options.seeds,
        "mlp_depths": mlp_depths,
        "conv_depths": conv_depths,
        "mlp": mlp,
        "conv": conv,
        "references": _references(n, draws),
        "traces": traces,
    }


def _ends(depths: Sequence[int], which: str) -> list[int]:
    return [] if not depths else [min(depths) if which == "low" else max(depths)]


def _references(n: int, draws: Sequence[int]) -> dict[str, Any]:
    lags = list(range(1, min(MAX_LAG, n - 1) + 1))
    out: dict[str, Any] = {}
    for kind in ("white", "brown"):
        acfs = [autocorrelation(noise(n, kind, torch.Generator().manual_seed(1000 + s)), lags) for s in draws]
        out[kind] = {
            "lag1": spread(a[0] for a in acfs),
            "acf": [spread(a[i] for a in acfs)["mean"] for i in range(len(lags))],
            "closed_form_lag1": 0.0 if kind == "white" else brown_autocorrelation(n, 1),
            "closed_form_acf": [0.0 if kind == "white" else brown_autocorrelation(n, h) for h in lags],
        }
    return out


def _lag1(table: dict[str, dict[str, Any]], label: str, depth: int) -> float:
    return number(table[label][str(depth)]["lag1"]["mean"])


def _by_seed(table: dict[str, dict[str, Any]], label: str, depth: int) -> list[float | None]:
    return table[label][str(depth)]["lag1_by_seed"]


def _minus(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[float | None, ...]:
    return tuple(None if x is None or y is None else x - y for x, y in zip(a, b))


def judge(numbers: dict[str, Any]) -> Verdict:
    """The claim, piece by piece: plain nets shatter with depth, skip connections resist, looks-linear does not."""
    mlp, conv, mlp_depths, conv_depths = numbers["mlp"], numbers["conv"], numbers["mlp_depths"], numbers["conv_depths"]
    t = THRESHOLDS
    checks, parts = [], []
    if len(mlp_depths) > 1:
        low, high = min(mlp_depths), max(mlp_depths)
        checks.append(
            Check(
                "plain_decays",
                f"lag-1 autocorrelation of plain MLPs with BN, depth {high} minus depth {low}",
                _minus(_by_seed(mlp, "plain+BN", high), _by_seed(mlp, "plain+BN", low)),
                t["plain_decays"],
            )
        )
        parts.append(
            f"the lag-1 autocorrelation of df/dx falls from {_lag1(mlp, 'plain+BN', low):.2f} to "
            f"{_lag1(mlp, 'plain+BN', high):.2f} in plain MLPs with BN from depth {low} to {high}, against "
            f"{_lag1(mlp, 'resnet+BN', high):.2f} for residual MLPs with BN ({_lag1(mlp, 'plain', high):.2f} plain and "
            f"{_lag1(mlp, 'resnet', high):.2f} residual without BN, {_lag1(mlp, 'highway', high):.2f} highway)"
        )
    if mlp_depths:
        high = max(mlp_depths)
        for residual, plain, what in (("resnet+BN", "plain+BN", "with BN"), ("resnet", "plain", "without BN")):
            checks.append(
                Check(
                    "skips_resist",
                    f"lag-1 autocorrelation at depth {high}, residual MLP minus plain MLP {what}",
                    _minus(_by_seed(mlp, residual, high), _by_seed(mlp, plain, high)),
                    t["skips_resist"],
                )
            )
    if conv_depths:
        high = max(conv_depths)
        checks += [
            Check(
                "skips_resist",
                f"lag-1 autocorrelation at depth {high}, residual convnet minus plain convnet (with BN)",
                _minus(_by_seed(conv, "resnet+BN", high), _by_seed(conv, "plain+BN", high)),
                t["skips_resist"],
            ),
            Check(
                "looks_linear",
                f"lag-1 autocorrelation of the looks-linear convnet at depth {high}",
                tuple(_by_seed(conv, "looks-linear", high)),
                t["looks_linear"],
            ),
            Check(
                "mirror_matters",
                f"lag-1 autocorrelation at depth {high}, looks-linear minus CReLU without the mirror",
                _minus(_by_seed(conv, "looks-linear", high), _by_seed(conv, "CReLU, no mirror", high)),
                t["mirror_matters"],
            ),
        ]
        parts.append(
            f"at depth {high} the convnets give {_lag1(conv, 'plain+BN', high):.2f} plain, "
            f"{_lag1(conv, 'resnet+BN', high):.2f} residual and {_lag1(conv, 'looks-linear', high):.4f} looks-linear "
            f"({_lag1(conv, 'CReLU, no mirror', high):.2f} without the mirrored init)"
        )
    found = "at initialisation, " + "; ".join(parts) if parts else ""
    return judged(checks, found=found, missing="no depth was measured")


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    mlp, conv, refs = numbers["mlp"], numbers["conv"], numbers["references"]
    mlp_depths, conv_depths, n = numbers["mlp_depths"], numbers["conv_depths"], numbers["points"]
    figures = [
        _trace_figure(numbers["traces"], mlp, mlp_depths, n, out),
        _depth_figure(mlp, conv, mlp_depths, conv_depths, refs, out),
        _acf_figure(mlp, mlp_depths, refs, n, out),
    ]
    return _table(mlp, conv, mlp_depths, conv_depths, refs), figures


def _table(
    mlp: dict[str, Any], conv: dict[str, Any], mlp_depths: list[int], conv_depths: list[int], refs: dict[str, Any]
) -> str:
    def cell(entry: dict[str, Any]) -> str:
        c = number(entry["centred_lag1"]["mean"])
        centred = "n/a" if math.isnan(c) else f"{c:.3f}"
        return f"{number(entry['lag1']['mean']):.3f} ± {number(entry['lag1']['std']):.2g} ({centred})"

    lines = []
    for title, table, depths in (("Fully connected, 1-D input", mlp, mlp_depths), ("Convnets", conv, conv_depths)):
        if not depths:
            continue
        lines += [
            f"{title}: lag-1 autocorrelation of the input gradient, mean ± std over seeds (centred ACF):",
            "",
            "| net | " + " | ".join(f"depth {d}" for d in depths) + " |",
            "|---|" + "---|" * len(depths),
        ]
        lines += [f"| {label} | " + " | ".join(cell(table[label][str(d)]) for d in depths) + " |" for label in table]
        lines.append("")
    white, brown = refs["white"], refs["brown"]
    lines.append(
        "References (lag 1): "
        f"white noise {white['lag1']['mean']:.3f} ± {white['lag1']['std']:.2g} (expected 0), "
        f"brown noise {brown['lag1']['mean']:.3f} ± {brown['lag1']['std']:.2g} "
        f"(expected ratio of sums, the value pooled over many walks converges to: {brown['closed_form_lag1']:.4f})."
    )
    return "\n".join(lines)


def _trace_figure(traces: dict[str, list[float]], mlp: dict[str, Any], depths: list[int], n: int, out: Path) -> Path:
    """The paper's Fig. 1: gradient traces along the line (the first seed's nets) next to brown and white noise."""
    fig, axes = new_figure(12.0, 6.4, cols=3, rows=2)
    x = line_points(n).squeeze(1)
    panels: list[tuple[str, torch.Tensor, str]] = []
    for label, which in SHOWN:
        for depth in _ends(depths, which):
            g = torch.tensor([number(v) for v in traces[f"{label}@{depth}"]])
            panels.append((f"{label}, depth {depth}", g, f"lag-1 {_lag1(mlp, label, depth):.2f} (mean)"))
    for kind in ("brown", "white"):
        g = noise(n, kind, torch.Generator().manual_seed(1000))
        panels.append((f"{kind} noise", g, f"lag-1 {autocorrelation(g, [1])[0]:.2f}"))
    for ax, (title, g, note) in zip([a for row in axes for a in row], panels):
        g = g.double()
        ax.plot(x.numpy(), (g / g.abs().max().clamp_min(1e-300)).numpy(), lw=0.8, label=note)
        ax.set(xlabel="input x (noise: sample index, rescaled)", ylabel="df/dx (scaled to max 1)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    titled(
        fig, "Gradient df/dx along a line of inputs, next to brown and white noise (Balduzzi et al., Fig. 1)", UNTRAINED
    )
    return save_figure(fig, out, f"{NAME}-traces")


def _depth_figure(
    mlp: dict[str, Any],
    conv: dict[str, Any],
    mlp_depths: list[int],
    conv_depths: list[int],
    refs: dict[str, Any],
    out: Path,
) -> Path:
    """Lag-1 autocorrelation against depth, for every net, with the noise references."""
    fig, axes = new_figure(12.5, 4.4, cols=2)
    for ax, table, depths, title in (
        (axes[0][0], mlp, mlp_depths, "fully connected, 1-D input"),
        (axes[0][1], conv, conv_depths, "convnets, line between two images"),
    ):
        for label in table:
            means = [_lag1(table, label, d) for d in depths]
            stds = [number(table[label][str(d)]["lag1"]["std"]) for d in depths]
            ax.errorbar(depths, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.axhline(refs["brown"]["closed_form_lag1"], color="saddlebrown", ls="--", lw=1, label="brown noise")
        ax.axhline(0.0, color="gray", ls=":", lw=1, label="white noise")
        if depths:
            ax.set_xscale("log")
            ax.set_xticks(depths, labels=[str(d) for d in depths])
            ax.minorticks_off()
        ax.set(xlabel="depth (layers)", ylabel="lag-1 autocorrelation of the input gradient")
        ax.set_title(title, fontsize=9)
        legend_outside(ax)
    titled(fig, "Correlation of the gradients at neighbouring inputs against depth", UNTRAINED)
    return save_figure(fig, out, f"{NAME}-depth")


def _acf_figure(mlp: dict[str, Any], depths: list[int], refs: dict[str, Any], n: int, out: Path) -> Path:
    """Autocorrelation against lag at the deepest MLP depth, with the noise references."""
    fig, ax = new_figure(8.0, 4.2)
    lags = list(range(1, len(refs["white"]["acf"]) + 1))
    if depths:
        high = max(depths)
        for label in mlp:
            ax.plot(lags, [number(v) for v in mlp[label][str(high)]["acf"]], marker=".", label=f"{label}, depth {high}")
    ax.plot(lags, refs["brown"]["closed_form_acf"], color="saddlebrown", ls="--", label="brown noise (expected)")
    ax.plot(lags, refs["white"]["acf"], color="gray", ls=":", label="white noise (sampled)")
    ax.set(xlabel=f"lag (points; {n} points on [-2, 2])", ylabel="autocorrelation of df/dx")
    legend_outside(ax)
    titled(fig, "Autocorrelation of the MLPs' input gradients by lag, at the deepest depth", UNTRAINED)
    return save_figure(fig, out, f"{NAME}-acf")
