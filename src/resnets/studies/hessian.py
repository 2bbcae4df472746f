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
twin, by Lanczos on HVPs over all parameters, on a seeded batch of training images per seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from resnets.runs import Run
from resnets.studies.common import StudyOptions, StudyResult, new_figure, progress, save_figure, seeds, spread
from resnets.studies.spectrum import (
    exact_hessian,
    flatten,
    hvp_operator,
    lanczos,
    summarise,
    top_eigenvalue,
)
from resnets.studies.trained import DEFAULT_DATA, DEFAULT_STEPS, PLAIN, RESIDUAL, trained_runs

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
GROWS, FLAT = 10.0, 1.5  # deepest/shallowest condition number: "grows" at >= 10x, "does not grow" below 1.5x


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
    depths: Sequence[int], seed_list: Sequence[int], target: torch.Tensor, *, quiet: bool = True
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per shortcut kind: the spectrum at zero and near zero (over seeds) at each depth the kind can take."""
    width = len(target)
    work = [(n, depth) for n in SHORTCUTS for depth in depths if n == 0 or depth % n == 0]
    nets: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {"zero": [], "near_zero": []} for label in SHORTCUTS.values()
    }
    for n, depth in progress(work, desc=f"{NAME}: linear nets", quiet=quiet):
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


def trained(options: StudyOptions, runs: Sequence[Run]) -> dict[str, Any]:
    """Per run: kind, unit count and top Hessian eigenvalue over seeds; residual/plain pairs of equal unit count."""
    samples = options.pick("samples", DEFAULT_SAMPLES)
    work = [(i, s) for i in range(len(runs)) for s in seeds(options, default=2)]
    measured: dict[int, list[dict[str, Any]]] = {}
    for i, s in progress(work, desc=f"{NAME}: trained nets", quiet=options.quiet):
        measured.setdefault(i, []).append(sharpness(runs[i], samples, s))
    nets: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs):
        blocks = run.model.residual_blocks()
        label = run.record.model if run.record.model not in nets else f"{run.record.model} ({i})"
        nets[label] = {
            "model": run.record.model,
            "run": str(run.path or run.checkpoint),
            "kind": "residual" if any(b.has_shortcut for b in blocks) else "plain",
            "units": len(blocks),
            "top": spread(m["top"] for m in measured[i]),
            "smallest": spread(m["smallest"] for m in measured[i]),
            "loss": spread(m["loss"] for m in measured[i]),
            "max_residual": max(m["residual"] for m in measured[i]),
            "per_seed": measured[i],
        }
    pairs = [
        {
            "residual": r,
            "plain": p,
            "ratio": nets[p]["top"]["mean"] / nets[r]["top"]["mean"],
            # the means differ by more than the two seed spreads together
            "separated": abs(nets[p]["top"]["mean"] - nets[r]["top"]["mean"])
            > nets[p]["top"]["std"] + nets[r]["top"]["std"],
        }
        for r in nets
        for p in nets
        if nets[r]["kind"] == "residual" and nets[p]["kind"] == "plain" and nets[r]["units"] == nets[p]["units"]
    ]
    return {"nets": nets, "pairs": pairs}


def _check(key: str, what: str, passed: bool | None, measured: Any) -> dict[str, Any]:
    return {"key": key, "check": what, "passed": passed, "measured": measured}


def checks(linear: dict[str, dict[str, list[dict[str, Any]]]], target: torch.Tensor) -> list[dict[str, Any]]:
    """The claim's consequences for the linear nets, each passed, failed or (too few depths) undecided."""
    kappa = zero_point_condition(target)
    two = [p["condition"] for p in linear["2-layer"]["zero"]]
    three = linear["3-layer"]["zero"]
    plain = [p for p in linear["none"]["zero"] if p["depth"] >= 3]
    found = [
        _check(
            "two_zero",
            "2-layer shortcuts at zero: condition number = sigma_max(A - I) / sigma_min(A - I) at every depth (1e-6)",
            all(c is not None and abs(c / kappa - 1) < 1e-6 for c in two) if two else None,
            {"closed_form": kappa, "measured": two},
        ),
        _check(
            "two_near",
            f"2-layer shortcuts near zero: grows less than {FLAT:g}x with depth",
            _below(growth(linear["2-layer"]["near_zero"]), FLAT),
            growth(linear["2-layer"]["near_zero"]),
        ),
    ]
    for key, label, where in (
        ("one_zero", "1-layer", "zero"),
        ("one_near", "1-layer", "near_zero"),
        ("none_near", "none", "near_zero"),
    ):
        g = growth(linear[label][where])
        kind = "no shortcut" if label == "none" else f"{label} shortcuts"
        what = f"{kind} {'at zero' if where == 'zero' else 'near zero'}: grows at least {GROWS:g}x with depth"
        found.append(_check(key, what, None if g is None else g >= GROWS, g))
    found += [
        _check(
            "three_zero",
            "3-layer shortcuts at zero: zero Hessian and zero gradient at every depth (a flat, high-order saddle)",
            all(p["vanishing"] and p["gradient_norm"] <= ATOL for p in three) if three else None,
            [p["max_abs"] for p in three],
        ),
        _check(
            "none_zero",
            "no shortcut at zero, 3 or more layers: zero Hessian (hence measured near zero)",
            all(p["vanishing"] for p in plain) if plain else None,
            [p["max_abs"] for p in plain],
        ),
    ]
    return found


def _below(value: float | None, bound: float) -> bool | None:
    return None if value is None else value < bound


def _g(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _pm(stats: dict[str, float]) -> str:
    return f"{_g(stats['mean'])} ± {_g(stats['std'])}"


def _verdict(linear: dict, found: list[dict], agree: dict, sharp: dict, kappa: float) -> tuple[str, bool | None]:
    results = {c["key"]: c["passed"] for c in found}
    supported = False if False in results.values() else (None if None in results.values() else True)
    head = {True: "Supported", False: "Not supported", None: "Undecided (too few depths for some checks)"}[supported]
    two, one = linear["2-layer"], linear["1-layer"]
    at_zero = sorted({_g(p["condition"]) for p in two["zero"]})
    near = [p["condition"]["mean"] for p in two["near_zero"]]
    span = f"{two['zero'][0]['depth']} to {two['zero'][-1]['depth']} layers" if two["zero"] else "no depth"
    two_text = (
        f"with 2-layer shortcuts the Hessian at zero has condition number {', '.join(at_zero) or 'n/a'} from "
        f"{span} (closed form sigma_max/sigma_min of A - I: {kappa:.3g}), and {_g(near[0] if near else None)} to "
        f"{_g(near[-1] if near else None)} near zero"
    )
    one_text = (
        f"with 1-layer shortcuts it grows {_g(growth(one['zero']))}x from the shallowest to the deepest net at zero "
        f"({_g(growth(one['near_zero']))}x near zero), and without shortcuts "
        f"{_g(growth(linear['none']['near_zero']))}x near zero"
    )
    three_text = (
        f"3-layer shortcuts {'have' if results['three_zero'] else 'do not all have'} a zero Hessian and gradient at "
        "zero (a flat, high-order saddle)"
    )
    trained_text = "; ".join(
        f"{p['plain']}'s top Hessian eigenvalue {_pm(sharp['nets'][p['plain']]['top'])} against "
        f"{p['residual']}'s {_pm(sharp['nets'][p['residual']]['top'])} (ratio {p['ratio']:.2f}: the plain "
        f"net is {'sharper, as expected' if p['ratio'] > 1 else 'not sharper, unlike the expectation'}"
        f"{'' if p['separated'] else ', within the spread over seeds'})"
        for p in sharp["pairs"]
    )
    agreed = "agree" if agree["agree"] else "DISAGREE"
    text = (
        f"{head}: {two_text}; {one_text}; {three_text}. Exact and Lanczos spectra {agreed} on a mid-size net. "
        f"Trained nets (reported, not part of the verdict): {trained_text or 'no residual/plain pair of equal units'}."
    )
    return (
        text,
        supported,
    )


def _linear_figure(linear: dict[str, dict[str, list[dict[str, Any]]]], out: str, kappa: float) -> Any:
    figure, axes = new_figure(15, 4.6, cols=3)
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
            mean = [p[key]["mean"] for p in near]
            span = [[m - p[key]["min"] for m, p in zip(mean, near)], [p[key]["max"] - m for m, p in zip(mean, near)]]
            ax.errorbar(depth, mean, yerr=span, fmt="o-", color=f"C{i}", capsize=3, label=label)
    at_zero.axhline(kappa, color="grey", ls=":", lw=1, label="σmax/σmin of A − I")
    note = "\nH = 0 (flat): " + "; ".join(flat) if flat else ""
    at_zero.set(title="(a) condition number at zero", xlabel="layers" + note, ylabel="max|λ| / min|λ|")
    near_zero.set(title=f"(b) near zero (N(0, {SCALE:g}²) weights; mean, min-max)", xlabel="layers")
    scale.set(title="(c) largest |λ| near zero (tiny: flat)", xlabel="layers", ylabel="max|λ|")
    near_zero.set(ylabel="max|λ| / min|λ|")
    depths = sorted({p["depth"] for points in linear.values() for p in points["zero"]})
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.legend(title="shortcut skips", fontsize=8)
        ax.grid(alpha=0.3)
    return save_figure(figure, out, f"{NAME}-condition")


def _trained_figure(sharp: dict[str, Any], out: str) -> Any:
    figure, ax = new_figure(5.5, 4.2)
    for i, (label, net) in enumerate(sharp["nets"].items()):
        values = [m["top"] for m in net["per_seed"]]
        ax.plot([i] * len(values), values, "o", alpha=0.5, color=f"C{i}")
        ax.errorbar([i + 0.15], [net["top"]["mean"]], yerr=[net["top"]["std"]], fmt="s", color=f"C{i}", capsize=4)
    ax.set_xticks(range(len(sharp["nets"])), [f"{k}\n({v['kind']})" for k, v in sharp["nets"].items()])
    ax.set(title="top Hessian eigenvalue of the training loss", ylabel="λ_max (points: seeds; square: mean ± std)")
    ax.grid(alpha=0.3)
    return save_figure(figure, out, f"{NAME}-trained")


def _table(linear: dict, found: list[dict], sharp: dict) -> str:
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
                c = near["condition"]
                cells.append(_pm(c) + (" (flat)" if near["vanishing"] else ""))
        rows.append(f"| {depth} | " + " | ".join(cells) + " |")
    rows += ["", "| check | passed | measured |", "|---|---|---|"]
    for c in found:
        measured = c["measured"] if isinstance(c["measured"], (float, type(None))) else "see JSON"
        rows.append(f"| {c['check']} | {c['passed']} | {_g(measured) if not isinstance(measured, str) else measured} |")
    rows += [
        "",
        "| trained net | kind | units | top Hessian eigenvalue | max Lanczos residual |",
        "|---|---|---|---|---|",
    ]
    for label, net in sharp["nets"].items():
        top = net["top"]
        rows.append(f"| {label} | {net['kind']} | {net['units']} | {_pm(top)} | {net['max_residual']:.2g} |")
    return "\n".join(rows)


def run(options: StudyOptions) -> StudyResult:
    """Condition numbers of deep linear nets by shortcut depth, then the sharpness of trained twins."""
    depths = sorted(set(options.pick("depths", DEFAULT_DEPTHS)))
    target = target_map()
    kappa = zero_point_condition(target)
    linear = sweep(depths, list(seeds(options)), target, quiet=options.quiet)
    agree = agreement(target)
    steps = options.pick("steps", DEFAULT_STEPS)
    runs = trained_runs(options, options.models or (RESIDUAL, PLAIN), steps=steps)
    sharp = trained(options, runs)
    found = checks(linear, target)
    verdict, supported = _verdict(linear, found, agree, sharp, kappa)
    figures = [_linear_figure(linear, options.out, kappa), _trained_figure(sharp, options.out)]
    settings = {
        "linear_net": f"square {WIDTH}x{WIDTH} float64 weights; unit(h) = h + W_n...W_1 h; none: h -> W_L...W_1 h",
        "loss": "1/2 E||f(x) - Ax||^2 over whitened x (E xx^T = I), computed in closed form as 1/2 ||M - A||_F^2",
        "target": f"A = I + U diag(s) V^T, U and V Haar orthogonal (seed {TARGET_SEED}), s evenly spaced "
        f"{TARGET_SINGULAR[0]} to {TARGET_SINGULAR[1]}",
        "depths": depths,
        "near_zero": f"weights N(0, {SCALE}^2), one draw per seed; a seed's deeper nets extend its shallower ones",
        "seeds": len(seeds(options)),
        "condition_number": f"max|λ| / min|λ| over |λ| > {RTOL:g} max|λ| (so at most {1 / RTOL:.0e}); "
        f"null where the Hessian is zero",
        "vanishing": f"max|λ| <= {ATOL:g}",
        "eigenvalues": f"dense Hessian from HVPs and eigvalsh up to {EXACT_LIMIT} parameters; Lanczos (full "
        f"reorthogonalisation, at most {LINEAR_LANCZOS_STEPS} steps) beyond",
        "trained_runs": [net["run"] for net in sharp["nets"].values()],
        "default_run_steps": None if options.runs else steps,
        "data": "each run's recorded data" if options.runs else options.data or DEFAULT_DATA,
        "trained_loss": "cross-entropy with the run's label smoothing (no weight decay), float32, no autocast",
        "trained_batch": f"{options.pick('samples', DEFAULT_SAMPLES)} training images per seed (torch.randperm "
        "seeded with the seed), unaugmented, normalised as in training",
        "trained_seeds": len(seeds(options, default=2)),
        "trained_eigenvalue": f"Lanczos on HVPs over all parameters, {TRAINED_LANCZOS_STEPS} steps",
        "bn": "eval-mode running statistics (trained)",
        "device": options.device,
    }
    numbers = {
        "target": {
            "singular_values_A_minus_I": torch.linalg.svdvals(target - torch.eye(len(target), dtype=target.dtype)),
            "singular_values_A": torch.linalg.svdvals(target),
            "closed_form_condition_2_layer": kappa,
        },
        "linear": linear,
        "growth": {label: {where: growth(points[where]) for where in points} for label, points in linear.items()},
        "agreement": agree,
        "checks": found,
        "trained": sharp,
    }
    return StudyResult(
        name=NAME,
        claim=CLAIM,
        verdict=verdict,
        supported=supported,
        settings=settings,
        numbers=numbers,
        table=_table(linear, found, sharp),
        figures=figures,
    )
