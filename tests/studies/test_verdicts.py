"""Every instrument's ``judge`` on canned numbers, with no training: supported, not supported, and undecided
where the spread over seeds straddles the threshold; and the verdict's interval, threshold and settling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from resnets.studies import get_study
from resnets.studies.verdict import (
    NOT_SUPPORTED,
    SUPPORTED,
    UNDECIDED,
    Check,
    Threshold,
    combine,
    judged,
    settling,
)

BELOW_ONE = Threshold(1.0, above=False, unit="x", paper="0.5 in the paper", source="Someone 2016, Fig. 2")
FLAT = {"steps": [0, 10], "values": [1.0, 1.0]}  # a headline that had settled


def test_a_check_is_decided_by_where_its_seeds_fall() -> None:
    assert Check("r", "ratio", (0.5, 0.9), BELOW_ONE).status == SUPPORTED
    assert Check("r", "ratio", (1.5, 1.1), BELOW_ONE).status == NOT_SUPPORTED
    straddles = Check("r", "ratio", (0.9, 1.2, None, math.nan), BELOW_ONE)
    assert straddles.status == UNDECIDED and straddles.interval == (0.9, 1.2) and straddles.mean == pytest.approx(1.05)
    assert Check("r", "ratio", (None,), BELOW_ONE).status == UNDECIDED  # nothing measured decides nothing
    assert combine([SUPPORTED, UNDECIDED, NOT_SUPPORTED]) == NOT_SUPPORTED
    assert combine([SUPPORTED, UNDECIDED]) == UNDECIDED and combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([]) == UNDECIDED
    text = judged([straddles], found="one ratio").text
    assert text.startswith("Undecided: one ratio; ratio: 1.05x (seeds 0.9 to 1.2), against below 1x (undecided;")
    assert "the paper: 0.5 in the paper, Someone 2016, Fig. 2" in text


def test_settling_says_when_a_longer_run_could_change_the_verdict() -> None:
    moving = settling([0, 100, 200], [2.0, 1.6, 1.3], quantity="ratio", threshold=1.0)
    assert moving["settled"] is False and moving["toward_threshold"] is True
    assert moving["last_change"] == pytest.approx(-0.3) and moving["relative_change"] == pytest.approx(0.3 / 1.3)
    text = judged([Check("r", "ratio", (1.3,), BELOW_ONE)], settling={"net": moving}).text
    assert "net's ratio had not settled: it moved from 1.6 (step 100) to 1.3 (step 200), 23% over the last" in text
    assert "towards the threshold: longer training could change this verdict" in text
    away = settling([0, 100], [0.8, 0.6], quantity="ratio", threshold=1.0)
    assert away["toward_threshold"] is False and "longer training" not in judged([], settling={"n": away}).text
    still = settling([0, 100, 200], [2.0, 1.31, 1.3], quantity="ratio", threshold=1.0)
    assert still["settled"] is True and "settled" not in judged([], settling={"n": still}).text
    assert settling([0], [1.0], quantity="ratio")["settled"] is None  # one point: no trend to read


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "std": 0.0, "n": len(values)}


# -- canned numbers: the smallest numbers each judge reads, with one per-seed quantity chosen by the test -----


def _gradients(drift: Sequence[float]) -> dict[str, Any]:
    def net(role: str, drifts: Sequence[float]) -> dict[str, Any]:
        return {
            "role": role,
            "depths": [20, 110],
            "by_depth": {"20": {"log10_by_seed": [0.0, 0.0]}, "110": {"log10_by_seed": list(drifts)}},
        }

    return {"init": {"resnet20": net("residual", drift), "plain20": net("plain", [6.0, 7.0])}, "trained": []}


def _responses(ratios: Sequence[float]) -> dict[str, Any]:
    nets = {n: {"mean_std": _spread([1.0]), "over_training": FLAT} for n in ("resnet20", "plain20")}
    pairs = [{"residual": "resnet20", "plain": "plain20", "ratio": 1.0, "by_seed": list(ratios)}]
    return {"nets": nets, "pairs": pairs, "depth": []}


def _lesion(median: Sequence[float]) -> dict[str, Any]:
    def net(residual: bool, median: Sequence[float], rise: float) -> dict[str, Any]:
        return {
            "residual": residual,
            "plain": not residual,
            "baseline_error": _spread([0.1]),
            "downsampling_increase": _spread([0.2]),
            "by_seed": {
                "single_rise_median": list(median),
                "single_rise": [rise] * 2,
                "k_largest_step": [rise] * 2,
                "swap_rise": [rise] * 2,
            },
            "over_training": {"steps": [0, 400], "values": [4.0, 4.0]},
        }

    return {
        "chance_error": 0.9,
        "models": {"resnet20": net(True, median, 2.0), "plain20": net(False, [60.0] * 2, 60.0)},
    }


def _paths(ratio: Sequence[float]) -> dict[str, Any]:
    run = {
        "by_seed": {"decay": [0.7, 0.8], "ratio": list(ratio)},
        "gradient_range": [5, 17],
        "path_range": [19, 35],
        "paths": 2**54,
        "units": 54,
        "over_training": FLAT,
    }
    return {"runs": {"resnet110": run}}


def _shattered(looks_linear: Sequence[float]) -> dict[str, Any]:
    def at(values: Sequence[float]) -> dict[str, Any]:
        return {"lag1": _spread(values), "lag1_by_seed": list(values)}

    mlp = {
        "plain+BN": {"2": at([0.9, 0.95]), "50": at([0.0, 0.05])},
        "resnet+BN": {"2": at([0.95, 0.95]), "50": at([0.6, 0.7])},
        "plain": {"2": at([0.9, 0.9]), "50": at([0.1, 0.2])},
        "resnet": {"2": at([0.9, 0.9]), "50": at([0.5, 0.6])},
        "highway": {"2": at([0.9, 0.9]), "50": at([0.8, 0.8])},
    }
    conv = {
        "plain+BN": {"20": at([0.7, 0.8])},
        "resnet+BN": {"20": at([0.9, 0.95])},
        "looks-linear": {"20": at(looks_linear)},
        "CReLU, no mirror": {"20": at([0.5, 0.6])},
    }
    return {"mlp": mlp, "conv": conv, "mlp_depths": [2, 50], "conv_depths": [20]}


def _iterative(ratio: Sequence[float]) -> dict[str, Any]:
    def net(residual: bool, cos: float, ratios: Sequence[float], rise: float) -> dict[str, Any]:
        return {
            "residual": residual,
            "plain": not residual,
            "baseline_error": _spread([0.1]),
            "cos_prev": _spread([cos]),
            "ratio": _spread(ratios),
            "by_seed": {"cos_prev": [cos] * 2, "ratio": list(ratios), "within_rise": [rise] * 2},
            "over_training": FLAT,
        }

    return {
        "chance_error": 0.9,
        "models": {"resnet20": net(True, 0.9, ratio, 5.0), "plain20": net(False, 0.3, [1.5] * 2, 60.0)},
    }


def _signal(change_at_one: Sequence[float]) -> dict[str, Any]:
    def by_depth(growth: Sequence[float]) -> dict[str, Any]:
        return {
            "20": {
                "input_overwritten": [],
                "per_seed_forward_growth": [1.0, 1.0],
                "per_seed_gradient_growth": [1.0, 1.0],
            },
            "110": {
                "input_overwritten": [],
                "per_seed_forward_growth": list(growth),
                "per_seed_gradient_growth": [1e3] * 2,
            },
        }

    identity = {"1": by_depth(change_at_one), "1/sqrt(L)": by_depth([1.2, 1.5])}
    identity["1/sqrt(L)"]["110"]["per_seed_gradient_growth"] = [1.1, 0.9]
    return {"profiles": {"resnet (post-act)": {"identity": identity}}}


def _gates(carry: Sequence[float]) -> dict[str, Any]:
    def point(step: int, carries: Sequence[float]) -> dict[str, Any]:
        return {
            "checkpoint": f"step-{step}",
            "step": step,
            "mean_t": _spread([0.2]),
            "closed_per_input": _spread(carries),
            "carry_fraction": _spread([0.2]),  # on average over inputs most gates are open, as in the paper
            "by_seed": {"closed_per_input": list(carries), "layer_range": [0.2, 0.3]},
        }

    result = {
        "checkpoints": [point(0, [1.0, 1.0]), point(400, carry)],
        "change": {"mean_abs_change_t_by_seed": [0.05, 0.06]},
    }
    return {"runs": {"highway_cifar19": result}}


def _degradation(plain_gap: Sequence[float]) -> dict[str, Any]:
    def runs(errors: Sequence[float]) -> list[dict[str, Any]]:
        return [{"final_train_error": e, "train_curve": {"step": [1, 2, 3], "error": [50.0, 30.0, e]}} for e in errors]

    return {
        "families": {"plain": "plain20", "residual": "resnet20"},
        "depths": [20, 56],
        "steps": 64000,
        "final": {f: {d: {"train_error": _spread([10.0])} for d in ("20", "56")} for f in ("plain", "residual")},
        "runs": {
            "plain": {"20": runs([10.0, 10.0]), "56": runs([10.0 + g for g in plain_gap])},
            "residual": {"20": runs([10.0, 10.0]), "56": runs([9.0, 9.5])},
        },
    }


def _landscape(residual_fraction: Sequence[float]) -> dict[str, Any]:
    def net(fractions: Sequence[float], units: int) -> dict[str, Any]:
        measures = {
            "convex_fraction@1": {**_spread(fractions), "per_seed": list(fractions)},
            "negative_curvature_ratio@1": {**_spread([0.1, 0.1]), "per_seed": [0.1, 0.1]},
            "roughness": _spread([1.0]),
            "sharpness@1": _spread([1.0]),
        }
        return {"measures": measures, "seeds": [{"seed": 0}, {"seed": 1}], "units": units, "over_training": FLAT}

    nets = {"resnet56": net(residual_fraction, 27), "plain56": net([0.5, 0.5], 27)}
    return {"nets": nets, "pairs": [["resnet56", "plain56"]]}


def _hessian(two_near_growth: Sequence[float]) -> dict[str, Any]:
    def near(depth: int, conditions: Sequence[float]) -> dict[str, Any]:
        return {"depth": depth, "per_seed": [{"condition": c} for c in conditions]}

    def zero(depth: int, condition: float | None, max_abs: float = 1.0) -> dict[str, Any]:
        return {"depth": depth, "condition": condition, "max_abs": max_abs, "gradient_norm": 0.0}

    linear = {
        "none": {
            "zero": [zero(3, None, 0.0), zero(64, None, 0.0)],
            "near_zero": [near(3, [2, 2]), near(64, [1e6] * 2)],
        },
        "1-layer": {"zero": [zero(2, 2.0), zero(64, 500.0)], "near_zero": [near(2, [2, 2]), near(64, [1e3] * 2)]},
        "2-layer": {
            "zero": [zero(2, 4.0), zero(64, 4.0)],
            "near_zero": [near(2, [4, 4]), near(64, [4 * g for g in two_near_growth])],
        },
        "3-layer": {"zero": [zero(3, None, 0.0), zero(63, None, 0.0)], "near_zero": []},
    }
    return {
        "linear": linear,
        "target": {"closed_form_condition_2_layer": 4.0},
        "agreement": {"agree": True},
        "trained": {"nets": {}, "pairs": []},
    }


def _scaling(trained_at_one: Sequence[bool]) -> dict[str, Any]:
    runs = [
        {
            "seed": s,
            "scale": scale,
            "outcome": "trained" if ok else "diverged",
            "diverged_at": None if ok else 3,
            "curve": {"step": [1, 2], "loss": [2.0, 1.0]},
        }
        for scale in ("1", "0.3", "0.1", "1/sqrt(L)")
        for s, ok in enumerate(trained_at_one if scale == "1" else (True, True))
    ]
    cells = [
        {
            "scale": scale,
            "counts": {
                o: sum(r["outcome"] == o for r in runs if r["scale"] == scale)
                for o in ("diverged", "stalled", "trained")
            },
            "diverged_at": [r["diverged_at"] for r in runs if r["scale"] == scale and r["diverged_at"] is not None],
        }
        for scale in ("1", "0.3", "0.1", "1/sqrt(L)")
    ]
    return {"runs": runs, "cells": cells, "seeds": 2, "steps": 200}


def _dynamics(change: Sequence[float]) -> dict[str, Any]:
    trend = {
        "gradient_mean_length": {"first": 4.0, "last": 5.0, "by_step": [4.0, 5.0], "change_by_seed": list(change)},
        "ratio": {"first": 0.5, "last": 0.8, "grew": 0.9},
        "bn_scale": {"first": 1.0, "last": 1.2, "grew": 0.9},
    }
    return {"trends": {"resnet20": trend}, "runs": {"resnet20": {"snapshots": [{"step": 0}, {"step": 400}]}}}


CANNED: dict[str, tuple[Callable[[Sequence[Any]], dict[str, Any]], Sequence[Any], Sequence[Any], Sequence[Any]]] = {
    # name: (numbers(x), x supported, x not supported, x straddling the threshold)
    "gradients": (_gradients, [0.1, -0.2], [-2.0, -3.0], [-0.5, -1.5]),
    "responses": (_responses, [0.8, 0.9], [1.2, 1.3], [0.9, 1.1]),
    "lesion": (_lesion, [0.5, 1.5], [8.0, 12.0], [1.0, 3.0]),
    "paths": (_paths, [0.4, 0.5], [0.95, 1.0], [0.7, 0.9]),
    "shattered": (_shattered, [1.0, 0.9999], [0.5, 0.6], [0.998, 1.0]),
    "iterative": (_iterative, [0.3, 0.5], [1.8, 2.1], [1.2, 1.8]),  # update ratios against the plain twin's 1.5
    "signal": (_signal, [100.0, 1000.0], [2.0, 3.0], [5.0, 50.0]),
    "gates": (_gates, [0.8, 0.9], [0.1, 0.2], [0.4, 0.6]),
    "degradation": (_degradation, [2.0, 3.0], [-1.0, -0.5], [-1.0, 2.0]),
    "landscape": (_landscape, [0.9, 0.8], [0.2, 0.3], [0.4, 0.7]),
    "hessian": (_hessian, [1.0, 1.1], [3.0, 5.0], [1.2, 2.0]),
    "scaling": (_scaling, [False, False], [True, True], [True, False]),
    "dynamics": (_dynamics, [0.5, 1.0], [-0.5, -1.0], [-0.5, 0.5]),
}


@pytest.mark.parametrize("name", list(CANNED))
def test_every_judge_says_supported_not_supported_and_undecided_from_canned_numbers(name: str) -> None:
    judge = get_study(name).judge
    numbers, good, bad, between = CANNED[name]
    found = {label: judge(numbers(x)) for label, x in (("good", good), ("bad", bad), ("between", between))}
    assert found["good"].status == SUPPORTED, found["good"].text
    assert found["bad"].status == NOT_SUPPORTED, found["bad"].text
    assert found["between"].status == UNDECIDED, found["between"].text
    straddling = [c for c in found["between"].checks if c.status == UNDECIDED]
    assert straddling, "the undecided verdict names the check whose seeds straddle its threshold"
    low, high = straddling[0].interval
    assert straddling[0].threshold.holds(low) != straddling[0].threshold.holds(high)  # one seed on each side
    assert f"seeds {low:.3g} to {high:.3g}" in found["between"].text
    assert found["good"].text.startswith("Supported: ") and found["bad"].text.startswith("Not supported: ")
    assert all(c.threshold in get_study(name).THRESHOLDS.values() for c in found["good"].checks)


def test_a_net_that_did_not_learn_leaves_the_lesion_undecided() -> None:
    numbers = _lesion([0.5, 1.5])
    numbers["models"]["resnet20"]["baseline_error"] = _spread([0.88])  # chance is 0.9
    verdict = get_study("lesion").judge(numbers)
    assert verdict.status == UNDECIDED and verdict.checks == () and "resnet20 did not learn" in verdict.text


def test_an_unsettled_headline_moving_toward_the_threshold_is_named_in_the_verdict() -> None:
    numbers = _lesion([0.5, 1.5])
    numbers["models"]["resnet20"]["over_training"] = {"steps": [0, 200, 400], "values": [0.2, 0.9, 1.8]}
    verdict = get_study("lesion").judge(numbers)
    assert verdict.status == SUPPORTED and verdict.settling["resnet20"]["settled"] is False
    assert "resnet20's median rise for one deleted unit (points) had not settled: it moved from 0.9 (step 200)" in (
        verdict.text
    )
    assert "longer training could change this verdict" in verdict.text
