"""``resnets study hessian``: the Hessian's condition number at initialisation, by shortcut depth (Li et al. 2016).

Li, Jiao, Han & Weissman 2016 ("Demystifying ResNet", arXiv:1611.01186) study deep linear nets built of
residual units that skip n layers, unit(h) = h + W_n ... W_1 h, against the net without shortcuts,
h -> W_L ... W_1 h, all weights square (d x d). With whitened inputs (E xx^T = I) and targets y = A x, the
loss 1/2 E||f(x) - y||^2 = 1/2 ||M - A||_F^2, where f(x) = M x: we use this closed form, so no sample enters.

At the zero point, with 2-layer units: write B = A - I and each unit's branch V U. The product of the units
is I + sum_k V_k U_k + (terms of 4th order), so the loss is 1/2||B||^2 - sum_k <B, V_k U_k> + O(4): no
gradient, and a Hessian that is block diagonal over units with blocks [[0, C], [C^T, 0]], C the map
U -> -B U^T. Its eigenvalues are +-sigma_i(B), each d times per unit: the condition number is
sigma_max(A - I) / sigma_min(A - I) at every depth. 3-layer units enter at 3rd order (the Hessian at zero is
exactly zero: a flat, high-order saddle), as does a plain net of 3 or more layers, so plain nets are measured
near zero too; 1-layer units enter at 1st order, with a Hessian whose spectrum spreads with depth.

Measured here: every eigenvalue (dense Hessian from HVPs, float64) up to ``EXACT_LIMIT`` parameters, Lanczos
on HVPs beyond; on a mid-size net both are run and compared (``agreement`` in the JSON). The condition number
is max|λ| / min|λ| over eigenvalues with |λ| > RTOL max|λ|, the rest counted as near zero. Near zero means
weights N(0, SCALE^2), one draw per seed; a seed's deeper nets extend its shallower ones (the same first
layers). The target: A = I + U diag(s) V^T with U, V seeded random orthogonal and s evenly spaced from 2 down
to 0.5, so the closed form above is 4 at every depth.

Trained nets: the top Hessian eigenvalue (sharpness) of the training loss of a residual run and its plain
twin, by Lanczos on HVPs over all parameters, on a seeded batch of training images per seed, and at every
snapshot the runs kept (the first seed's batch). They are reported beside the verdict, which the linear nets
decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.runs import Run
from resnets.studies.common import kind, number, over_training_rows, spread
from resnets.studies.contract import INTS, Context, TrainedOptions, option
from resnets.studies.figures import UNTRAINED, new_figure, save_figure, titled, trained_for
from resnets.studies.spectrum import exact_hessian, flatten, hvp_operator, lanczos, summarise, top_eigenvalue
from resnets.studies.trained import TrainedRun, over_snapshots, trained_runs
from resnets.studies.verdict import Check, Threshold, Verdict, judged, settling

NAME = "hessian"
CLAIM = (
    "In deep linear networks, residual units whose shortcut skips two layers give the loss Hessian at the zero "
    "initial point a condition number that does not depend on depth; shortcuts that skip one layer behave like no "
    "shortcut, whose condition number explodes with depth; shortcuts that skip three or more layers make the zero "
    "point a flat, high-order saddle (Li, Jiao, Han & Weissman 2016, 'Demystifying ResNet', arXiv:1611.01186). "
    "Trained plain nets are expected to be sharper (a larger top Hessian eigenvalue) than their residual twins "
    "(Li, Xu, Taylor, Studer & Goldstein 2018, 'Visualizing the Loss Landscape of Neural Nets')."
)
SHORTCUTS = {0: "none", 1: "1-layer", 2: "2-layer", 3: "3-layer"}  # layers a shortcut skips -> label
WIDTH = 4  # d: every weight is d x d
SCALE = 0.01  # std of each weight entry "near zero"
TARGET_SEED = 0
TARGET_SINGULAR = (2.0, 0.5)  # singular values of A - I, evenly spaced between these: condition number 4
DEFAULT_DEPTHS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # weight layers
RTOL = 1e-10  # |λ| <= RTOL max|λ| counts as zero (float64 Hessians resolve ~1e-13): condition numbers cap at 1e10
ATOL = 1e-12  # max|λ| <= ATOL: the Hessian vanishes (a flat point); the loss itself is of order 1
EXACT_LIMIT = 2048  # parameters up to which the Hessian is formed densely; Lanczos beyond
LINEAR_LANCZOS_STEPS = 512
AGREEMENT_NET = (1, 16)  # (shortcut, depth) of the mid-size net, near zero, where exact and Lanczos are compared
DEFAULT_SAMPLES = 256  # training images per seed for the trained nets' Hessian
TRAINED_LANCZOS_STEPS = 10  # enough for the top eigenvalue of resnet20/plain20 to ~1e-4 (residuals in the JSON)
FLOOR = 1e-14  # panel (c) of the figure shows smaller |eigenvalues| (a vanishing Hessian) at this floor


GROWS, FLAT = 10.0, 1.5  # deepest/shallowest condition number: "grows" at >= 10x, "does not grow" below 1.5x
LI = "Li, Jiao, Han & Weissman 2016, 'Demystifying ResNet'"
THRESHOLDS = {
    "two_zero": Threshold(
        1e-6,
        above=False,
        unit="",
        paper="with 2-layer shortcuts the Hessian at the zero initial point has a condition number that does not "
        "depend on depth",
        source=f"{LI}, Sec. 3, Theorem 1",
        why="the largest relative difference, over depths, between the measured condition number and the closed "
        "form sigma_max(A - I) / sigma_min(A - I)",
    ),
    "two_near": Threshold(
        FLAT,
        above=False,
        unit="x",
        paper="near the zero point the 2-shortcut condition number stays depth-invariant",
        source=f"{LI}, Sec. 3 and 5",
        why="the condition number at the deepest net over the shallowest, weights N(0, 0.01^2)",
    ),
    "grows": Threshold(
        GROWS,
        above=True,
        unit="x",
        paper="1-layer shortcuts behave like none: the condition number of the Hessian explodes with depth",
        source=f"{LI}, Sec. 3-4, Theorem 2",
        why="the condition number at the deepest net over the shallowest",
    ),
    "flat": Threshold(
        ATOL,
        above=False,
        unit="",
        paper="with shortcuts of 3 or more layers (and plain nets of 3 or more layers) the zero point is a "
        "high-order saddle: zero gradient and zero Hessian",
        source=f"{LI}, Sec. 3, Theorem 1",
        why="the largest |eigenvalue| (and gradient norm) at the zero point over depths",
    ),
}


@dataclass(frozen=True)
class Options(TrainedOptions):
    depths: tuple[int, ...] = option(DEFAULT_DEPTHS, "weight layers of the deep linear nets", **INTS)
    seeds: int = option(3, "draws of the near-zero weights of the linear nets")
    samples: int = option(256, "training images per seed for the trained nets' Hessian")
    trained_seeds: int = option(2, "batches per trained net")


def target_map(width: int = WIDTH, seed: int = TARGET_SEED) -> torch.Tensor:
    """A = I + U diag(s) V^T: the target map, whose A - I has the known singular values s."""
    generator = torch.Generator().manual_seed(seed)
    u, v = _orthogonal(width, generator), _orthogonal(width, generator)
    s = torch.linspace(*TARGET_SINGULAR, width, dtype=torch.float64)
    return torch.eye(width, dtype=torch.float64) + u @ torch.diag(s) @ v.T


def _orthogonal(width: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # the Haar-distributed Q of the QR decomposition


def zero_point_condition(target: torch.Tensor) -> float:
    """The closed form for 2-layer shortcuts at zero: sigma_max(A - I) / sigma_min(A - I)."""
    s = torch.linalg.svdvals(target - torch.eye(len(target), dtype=target.dtype))
    return float(s.max() / s.min())


def end_to_end(weights: Sequence[torch.Tensor], shortcut: int) -> torch.Tensor:
    """M with f(x) = M x: units h -> h + W_n ... W_1 h of ``shortcut`` = n layers; 0: W_L ... W_1, no shortcut."""
    m = torch.eye(weights[0].shape[0], dtype=weights[0].dtype)
    if shortcut == 0:
        for w in weights:
            m = w @ m
        return m
    for start in range(0, len(weights), shortcut):
        branch = weights[start]
        for w in weights[start + 1 : start + shortcut]:
            branch = w @ branch
        m = m + branch @ m
    return m


def population_loss(weights: Sequence[torch.Tensor], shortcut: int, target: torch.Tensor) -> torch.Tensor:
    """1/2 E||M x - A x||^2 over whitened x, which is 1/2 ||M - A||_F^2."""
    return 0.5 * (end_to_end(weights, shortcut) - target).square().sum()


def linear_weights(depth: int, width: int, scale: float, seed: int) -> list[torch.Tensor]:
    """``depth`` d x d float64 weights with N(0, scale^2) entries (zero at scale 0), drawn in order."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.randn(width, width, generator=generator, dtype=torch.float64)).requires_grad_()
        for _ in range(depth)
    ]


def linear_spectrum(
    shortcut: int, weights: list[torch.Tensor], target: torch.Tensor, *, exact_limit: int = EXACT_LIMIT, seed: int = 0
) -> dict[str, Any]:
    """Loss, gradient norm and Hessian spectrum summary of one linear net at ``weights``."""
    loss_fn = lambda: population_loss(weights, shortcut, target)
    loss = loss_fn()
    gradient = flatten(torch.autograd.grad(loss, weights))
    dim = int(gradient.numel())
    measured: dict[str, Any] = {"params": dim, "loss": float(loss.detach()), "gradient_norm": float(gradient.norm())}
    if dim <= exact_limit:
        hessian = exact_hessian(loss_fn, weights)
        values = torch.linalg.eigvalsh((hessian + hessian.T) / 2)
        return {**measured, "method": "exact", **summarise(values, rtol=RTOL, atol=ATOL)}
    steps = min(dim, LINEAR_LANCZOS_STEPS)
    result = lanczos(hvp_operator(loss_fn, weights), dim, steps, torch.Generator().manual_seed(seed))
    summary = summarise(result.values, rtol=RTOL, atol=ATOL)
    if result.steps < dim:  # Ritz values only: no multiplicities, and min|λ| is exact only if the space closed
        summary.update(near_zero=None, negative=None)
    return {
        **measured,
        "method": "lanczos",
        "lanczos_steps": result.steps,
        "exhausted": result.exhausted,
        "estimate": result.steps < dim and not result.exhausted,
        **summary,
    }


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def sweep(
    depths: Sequence[int], seed_list: Sequence[int], target: torch.Tensor, *, progress: Any = None
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per shortcut kind: the spectrum at zero and near zero (over seeds) at each depth the kind can take."""
    width = len(target)
    work = [(n, depth) for n in SHORTCUTS for depth in depths if n == 0 or depth % n == 0]
    nets: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {"zero": [], "near_zero": []} for label in SHORTCUTS.values()
    }
    for n, depth in progress(work) if progress is not None else work:
        where = {"depth": depth, "units": depth // n if n else 0}
        zero = linear_spectrum(n, linear_weights(depth, width, 0.0, 0), target)
        nets[SHORTCUTS[n]]["zero"].append({**where, **zero})
        per_seed = [linear_spectrum(n, linear_weights(depth, width, SCALE, s), target, seed=s) for s in seed_list]
        nets[SHORTCUTS[n]]["near_zero"].append(
            {
                **where,
                "params": per_seed[0]["params"],
                "method": per_seed[0]["method"],
                **{key: spread(_nan(m[key]) for m in per_seed) for key in ("condition", "max_abs", "min_abs")},
                "gradient_norm": spread(m["gradient_norm"] for m in per_seed),
                "vanishing": sum(bool(m["vanishing"]) for m in per_seed),
                "per_seed": per_seed,
            }
        )
    return nets


def growth(points: list[dict[str, Any]]) -> float | None:
    """Condition number at the deepest depth over that at the shallowest (means over seeds near zero)."""
    values = [p["condition"]["mean"] if isinstance(p["condition"], dict) else _nan(p["condition"]) for p in points]
    if len(values) < 2 or not all(math.isfinite(v) for v in (values[0], values[-1])):
        return None
    return values[-1] / values[0]


def agreement(target: torch.Tensor) -> dict[str, Any]:
    """Exact eigenvalues against a full Lanczos run and a short top-eigenvalue run, on one mid-size net."""
    shortcut, depth = AGREEMENT_NET
    weights = linear_weights(depth, len(target), SCALE, 0)
    loss_fn = lambda: population_loss(weights, shortcut, target)
    exact = linear_spectrum(shortcut, weights, target)
    dim = exact["params"]
    full = summarise(
        lanczos(hvp_operator(loss_fn, weights), dim, dim, torch.Generator().manual_seed(0)).values, rtol=RTOL, atol=ATOL
    )
    top = top_eigenvalue(hvp_operator(loss_fn, weights), dim, 40, torch.Generator().manual_seed(0))
    differences = {
        "condition": abs(full["condition"] / exact["condition"] - 1),
        "max_abs": abs(full["max_abs"] / exact["max_abs"] - 1),
        "top_40_steps": abs(top.magnitude / exact["max_abs"] - 1),
        "largest_40_steps": abs(top.algebraic / exact["largest"] - 1),
    }
    return {
        "net": {"shortcut": SHORTCUTS[shortcut], "depth": depth, "params": dim, "scale": SCALE, "seed": 0},
        "exact": {k: exact[k] for k in ("condition", "max_abs", "min_abs", "largest", "smallest")},
        "lanczos_full": {k: full[k] for k in ("condition", "max_abs", "min_abs", "largest", "smallest")},
        "lanczos_40_steps": {"largest": top.algebraic, "magnitude": top.magnitude, "residual": top.magnitude_residual},
        "relative_difference": differences,
        "agree": max(differences.values()) < 1e-6,
    }


def sharpness(run: Run, samples: int, seed: int, steps: int = TRAINED_LANCZOS_STEPS) -> dict[str, Any]:
    """Top Hessian eigenvalue of a run's training loss on ``samples`` training images drawn by ``seed``.

    The loss is the cross-entropy the run trained with (its recipe's label smoothing; weight decay left out),
    in eval mode (running BN statistics) and float32 without autocast, over all trainable parameters.
    """
    loader = run.loader("train")
    n = int(loader.targets.shape[0])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(samples, n)]
    batches = [loader.batch(0, i, order) for i in range(math.ceil(len(order) / loader.batch_size))]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    model = run.model.eval()
    smoothing = float(run.record.recipe.get("label_smoothing", 0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = lambda: F.cross_entropy(model(x).float(), y, label_smoothing=smoothing)
    with torch.no_grad():
        loss = float(loss_fn())
    dim = sum(p.numel() for p in params)
    operator = hvp_operator(loss_fn, params)
    top = top_eigenvalue(operator, dim, steps, torch.Generator().manual_seed(seed))
    return {
        "seed": seed,
        "samples": len(order),
        "loss": loss,
        "top": top.algebraic,
        "magnitude": top.magnitude,
        "smallest": top.smallest,
        "residual": top.residual,
        "lanczos_steps": top.steps,
        "label_smoothing": smoothing,
    }


def trained(trained_runs_: Sequence[TrainedRun], options: Options, context: Context) -> dict[str, Any]:
    """Per run: kind, unit count and top Hessian eigenvalue over seeds, and at every kept snapshot; residual/plain
    pairs of equal unit count."""
    nets: dict[str, dict[str, Any]] = {}
    for run in trained_runs_:
        seeds = range(options.trained_seeds)
        measured = [sharpness(run.run, options.samples, s) for s in context.progress(seeds, f"{NAME} {run.label}")]
        blocks = run.run.model.residual_blocks()
        nets[run.label] = {
            **run.describe(),
            "kind": kind(run.run.model),
            "units": len(blocks),
            "top": spread(m["top"] for m in measured),
            "smallest": spread(m["smallest"] for m in measured),
            "loss": spread(m["loss"] for m in measured),
            "max_residual": max(m["residual"] for m in measured),
            "per_seed": measured,
            "over_training": over_snapshots(
                run, lambda r: sharpness(r, options.samples, 0)["top"], f"{NAME} {run.label} snapshots"
            ),
        }
    pairs = [
        {"residual": r, "plain": p, "ratio": nets[p]["top"]["mean"] / nets[r]["top"]["mean"]}
        for r in nets
        for p in nets
        if nets[r]["kind"] == "residual" and nets[p]["kind"] == "plain" and nets[r]["units"] == nets[p]["units"]
    ]
    return {"nets": nets, "pairs": pairs}


def measure(options: Options, context: Context) -> dict[str, Any]:
    """Condition numbers of deep linear nets by shortcut depth, then the sharpness of trained twins."""
    depths = sorted(set(options.depths))
    target = target_map()
    linear = sweep(
        depths, list(range(options.seeds)), target, progress=lambda items: context.progress(items, f"{NAME}: linear")
    )
    runs = trained_runs(NAME, options, context)
    return {
        "settings": {
            "linear_net": f"square {WIDTH}x{WIDTH} float64 weights; unit(h) = h + W_n...W_1 h; none: h -> W_L...W_1 h",
            "loss": "1/2 E||f(x) - Ax||^2 over whitened x (E xx^T = I), computed in closed form as 1/2 ||M - A||_F^2",
            "target": f"A = I + U diag(s) V^T, U and V Haar orthogonal (seed {TARGET_SEED}), s evenly spaced "
            f"{TARGET_SINGULAR[0]} to {TARGET_SINGULAR[1]}",
            "near_zero": f"weights N(0, {SCALE}^2), one draw per seed; a seed's deeper nets extend its shallower ones",
            "condition_number": f"max|λ| / min|λ| over |λ| > {RTOL:g} max|λ| (so at most {1 / RTOL:.0e}); "
            "null where the Hessian is zero",
            "vanishing": f"max|λ| <= {ATOL:g}",
            "eigenvalues": f"dense Hessian from HVPs and eigvalsh up to {EXACT_LIMIT} parameters; Lanczos (full "
            f"reorthogonalisation, at most {LINEAR_LANCZOS_STEPS} steps) beyond",
            "trained_loss": "cross-entropy with the run's label smoothing (no weight decay), float32, no autocast",
            "trained_batch": f"{options.samples} training images per seed (torch.randperm seeded with the seed), "
            "unaugmented, normalised as in training",
            "trained_eigenvalue": f"Lanczos on HVPs over all parameters, {TRAINED_LANCZOS_STEPS} steps",
            "bn": "eval-mode running statistics (trained)",
        },
        "target": {
            "singular_values_A_minus_I": torch.linalg.svdvals(target - torch.eye(len(target), dtype=target.dtype)),
            "singular_values_A": torch.linalg.svdvals(target),
            "closed_form_condition_2_layer": zero_point_condition(target),
        },
        "linear": linear,
        "growth": {label: {where: growth(points[where]) for where in points} for label, points in linear.items()},
        "agreement": agreement(target),
        "trained_runs": [r.describe() for r in runs],
        "trained": trained(runs, options, context),
    }


def _seed_growths(points: list[dict[str, Any]]) -> tuple[float | None, ...]:
    """Per near-zero draw: the condition number at the deepest net over the shallowest."""
    if len(points) < 2:
        return ()
    low, high = points[0]["per_seed"], points[-1]["per_seed"]
    return tuple(
        None if a["condition"] is None or b["condition"] is None else b["condition"] / a["condition"]
        for a, b in zip(low, high)
    )


def judge(numbers: dict[str, Any]) -> Verdict:
    linear, kappa = numbers["linear"], numbers["target"]["closed_form_condition_2_layer"]
    two, t = linear["2-layer"], THRESHOLDS
    zero_growth = {label: growth(points["zero"]) for label, points in linear.items()}
    at_zero = [p["condition"] for p in two["zero"]]
    checks = [
        Check(
            "two_zero",
            "2-layer shortcuts at zero: largest relative gap to the closed-form condition number",
            (max((abs(c / kappa - 1) if c is not None else math.inf) for c in at_zero),) if at_zero else (),
            t["two_zero"],
        ),
        Check(
            "two_near",
            "2-layer shortcuts near zero: condition number growth over depth",
            _seed_growths(two["near_zero"]),
            t["two_near"],
        ),
        Check(
            "grows",
            "1-layer shortcuts at zero: condition number growth over depth",
            (zero_growth["1-layer"],),
            t["grows"],
        ),
        Check(
            "grows",
            "1-layer shortcuts near zero: condition number growth over depth",
            _seed_growths(linear["1-layer"]["near_zero"]),
            t["grows"],
        ),
        Check(
            "grows",
            "no shortcut near zero: condition number growth over depth",
            _seed_growths(linear["none"]["near_zero"]),
            t["grows"],
        ),
        Check(
            "flat",
            "3-layer shortcuts at zero: largest |eigenvalue| or gradient norm",
            (max((max(p["max_abs"], p["gradient_norm"]) for p in linear["3-layer"]["zero"]), default=None),),
            t["flat"],
        ),
        Check(
            "flat",
            "no shortcut at zero, 3 or more layers: largest |eigenvalue|",
            (max((p["max_abs"] for p in linear["none"]["zero"] if p["depth"] >= 3), default=None),),
            t["flat"],
        ),
    ]
    agree = numbers["agreement"]
    sharp = numbers["trained"]
    trained_text = "; ".join(
        f"{p['plain']}'s top Hessian eigenvalue {_pm(sharp['nets'][p['plain']]['top'])} against "
        f"{p['residual']}'s {_pm(sharp['nets'][p['residual']]['top'])} (ratio {number(p['ratio']):.2f})"
        for p in sharp["pairs"]
    )
    notes = [
        f"Exact and Lanczos spectra {'agree' if agree['agree'] else 'DISAGREE'} on a mid-size net",
        "Trained nets (reported, not part of the verdict, after Li et al. 2018): "
        + (trained_text or "no residual/plain pair of equal units"),
    ]
    moving = {}
    for p in sharp["pairs"]:
        a, b = sharp["nets"][p["plain"]]["over_training"], sharp["nets"][p["residual"]]["over_training"]
        if a["steps"] == b["steps"]:
            ratio = [None if x is None or not y else x / y for x, y in zip(a["values"], b["values"])]
            moving[f"{p['plain']}/{p['residual']}"] = settling(a["steps"], ratio, quantity="top-eigenvalue ratio")
    found = f"deep linear nets of {two['zero'][0]['depth']} to {two['zero'][-1]['depth']} layers" if two["zero"] else ""
    return judged(checks, found=found, notes=notes, settling=moving)


def _g(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _pm(stats: dict[str, Any]) -> str:
    return f"{_g(stats['mean'])} ± {_g(stats['std'])}"


def render(numbers: dict[str, Any], out: Path) -> tuple[str, list[Path]]:
    kappa = numbers["target"]["closed_form_condition_2_layer"]
    figures = [
        _linear_figure(numbers["linear"], out, kappa),
        _trained_figure(numbers["trained"], out, trained_for(numbers["trained_runs"])),
    ]
    return _table(numbers["linear"], numbers["trained"]), figures


def _linear_figure(linear: dict[str, dict[str, list[dict[str, Any]]]], out: Path, kappa: float) -> Path:
    """Condition numbers at and near zero, and the largest |eigenvalue| near zero, by depth and shortcut.

    Panel (c) draws values below FLOOR (a vanishing Hessian: 1e-100 and less for deep nets of 3-layer units)
    at the floor, marked as flat, so that the other curves keep the panel's range.
    """
    figure, axes = new_figure(16, 4.8, cols=3)
    at_zero, near_zero, scale = axes[0]
    flat = []
    for i, (label, points) in enumerate(linear.items()):
        kept = [p for p in points["zero"] if p["condition"] is not None]
        at_zero.plot([p["depth"] for p in kept], [p["condition"] for p in kept], "o-", color=f"C{i}", label=label)
        gone = [p["depth"] for p in points["zero"] if p["vanishing"]]
        flat += [f"{label} ({gone[0]} to {gone[-1]} layers)"] if gone else []
        near = points["near_zero"]
        depth = [p["depth"] for p in near]
        for ax, key in ((near_zero, "condition"), (scale, "max_abs")):
            mean = [number(p[key]["mean"]) for p in near]
            low = [number(p[key]["min"]) for p in near]
            high = [number(p[key]["max"]) for p in near]
            if key == "max_abs":
                shown = [max(m, FLOOR) for m in mean]
                ax.plot(depth, shown, "o-", color=f"C{i}", label=label)
                under = [(d, FLOOR) for d, m in zip(depth, mean) if not m > FLOOR]
                if under:
                    ax.plot(*zip(*under), "v", color=f"C{i}", ms=8)
                continue
            span = [[m - lo for m, lo in zip(mean, low)], [hi - m for m, hi in zip(mean, high)]]
            ax.errorbar(depth, mean, yerr=span, fmt="o-", color=f"C{i}", capsize=3, label=label)
    at_zero.axhline(kappa, color="grey", ls=":", lw=1, label="σmax/σmin of A − I")
    note = "\nH = 0 (flat): " + "; ".join(flat) if flat else ""
    at_zero.set(title="(a) condition number at zero", xlabel="layers" + note, ylabel="max|λ| / min|λ|")
    near_zero.set(title=f"(b) near zero (N(0, {SCALE:g}²) weights; mean, min-max)", xlabel="layers")
    scale.set(title=f"(c) largest |λ| near zero (▼: below {FLOOR:g}, flat)", xlabel="layers", ylabel="max|λ| (mean)")
    near_zero.set(ylabel="max|λ| / min|λ|")
    scale.set_ylim(bottom=FLOOR / 3)
    depths = sorted({p["depth"] for points in linear.values() for p in points["zero"]})
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.legend(title="shortcut skips", fontsize=8)
        ax.grid(alpha=0.3)
    titled(
        figure, "Hessian of deep linear nets at and near the zero point, by shortcut depth (Li et al. 2016)", UNTRAINED
    )
    return save_figure(figure, out, f"{NAME}-condition")


def _trained_figure(sharp: dict[str, Any], out: Path, training: str) -> Path:
    figure, ax = new_figure(6.0, 4.4)
    for i, (label, net) in enumerate(sharp["nets"].items()):
        values = [number(m["top"]) for m in net["per_seed"]]
        ax.plot([i] * len(values), values, "o", alpha=0.5, color=f"C{i}")
        top = net["top"]
        ax.errorbar([i + 0.15], [number(top["mean"])], yerr=[number(top["std"])], fmt="s", color=f"C{i}", capsize=4)
    ax.set_xticks(range(len(sharp["nets"])), [f"{k}\n({v['kind']})" for k, v in sharp["nets"].items()])
    ax.set(ylabel="λ_max (points: seeds; square: mean ± std)")
    ax.grid(alpha=0.3)
    titled(figure, "Top Hessian eigenvalue of the training loss", training)
    return save_figure(figure, out, f"{NAME}-trained")


def _table(linear: dict, sharp: dict) -> str:
    labels = list(linear)
    rows = [
        "| layers | " + " | ".join(f"{label}: at 0 | {label}: near 0" for label in labels) + " |",
        "|---|" + "---|---|" * len(labels),
    ]
    for depth in sorted({p["depth"] for points in linear.values() for p in points["zero"]}):
        cells = []
        for label in labels:
            zero = next((p for p in linear[label]["zero"] if p["depth"] == depth), None)
            near = next((p for p in linear[label]["near_zero"] if p["depth"] == depth), None)
            cells.append("-" if zero is None else ("H = 0" if zero["vanishing"] else _g(zero["condition"])))
            if near is None:
                cells.append("-")
            else:
                cells.append(_pm(near["condition"]) + (" (flat)" if near["vanishing"] else ""))
        rows.append(f"| {depth} | " + " | ".join(cells) + " |")
    rows += [
        "",
        "| trained net | kind | units | top Hessian eigenvalue | max Lanczos residual |",
        "|---|---|---|---|---|",
    ]
    for label, net in sharp["nets"].items():
        rows.append(
            f"| {label} | {net['kind']} | {net['units']} | {_pm(net['top'])} | {number(net['max_residual']):.2g} |"
        )
    rows += over_training_rows(sharp["nets"], "top Hessian eigenvalue (first batch)")
    return "\n".join(rows)
