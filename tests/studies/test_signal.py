"""``resnets study signal``: unit statistics checked against closed forms of linear residual chains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnets.cli import main
from resnets.layers.skip_unit import SkipUnit, UnitShape
from resnets.models.base import SkipNetwork
from resnets.studies.signal import CLAIM, unit_profile


class LinearUnit(SkipUnit):
    """x + s W x: a residual unit whose branch is one fixed matrix."""

    def __init__(self, weight: torch.Tensor) -> None:
        width = weight.shape[0]
        super().__init__(UnitShape(width, width))
        self.linear = nn.Linear(width, width, bias=False, dtype=weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(weight)

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.linear(x), x


class OverwritingUnit(LinearUnit):
    """A faulty unit: an in-place ReLU on its own input, so its shortcut carries relu(x) instead of x."""

    def residual_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.relu_(x)
        return self.linear(x), x


class LinearChain(SkipNetwork):
    """x_L = prod (I + s W_l) x_0; the head is the identity, so the logits are x_L itself."""

    input_kind = "vector"

    def __init__(self, weights: list[torch.Tensor], unit: type[LinearUnit] = LinearUnit) -> None:
        super().__init__()
        width = weights[0].shape[0]
        self.in_channels = self.num_classes = self.num_features = width
        self.units = nn.Sequential(*(unit(w) for w in weights))
        self.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)

    def _residual_block_modules(self) -> list[tuple[str, int, nn.Module]]:
        return [(f"units.{i}", 1, unit) for i, unit in enumerate(self.units)]


def skew_rotation(width: int, rng: np.random.Generator) -> np.ndarray:
    """Q = O J O^T with J = diag([[0, -1], [1, 0]], ...): orthogonal and skew, so x^T Q x = 0 and |Qx| = |x|."""
    o, _ = np.linalg.qr(rng.standard_normal((width, width)))
    j = np.kron(np.eye(width // 2), np.array([[0.0, -1.0], [1.0, 0.0]]))
    return o @ j @ o.T


def paired_batch(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """x and -x: a linear chain is odd, so every coordinate has batch mean 0 at every unit."""
    x = rng.standard_normal((n, width)) * 1.7
    return np.concatenate([x, -x])


@pytest.mark.parametrize("scale", [1.0, 0.5, "inv_sqrt_depth"])
def test_orthogonal_branches_add_their_variance_exactly(scale: float | str) -> None:
    # Q skew and orthogonal: |x + sQx|^2 = |x|^2 (1 + s^2) for every x, and for the gradient
    # |(I + sQ)^T g|^2 = |(I - sQ) g|^2 = |g|^2 (1 + s^2). So Var(x_l) = Var(x_0) (1 + s^2)^l, the gradient's
    # mean square at unit l's input is that at the output times (1 + s^2)^(L - l), the shortcut's share of
    # Var(x + sQx) is 1 / (1 + s^2), and the correlation of x and Qx is 0.
    rng = np.random.default_rng(0)
    units, width = 9, 8
    qs = [skew_rotation(width, rng) for _ in range(units)]
    x0 = paired_batch(rng, 5, width)
    targets = np.arange(len(x0)) % width
    s = 1.0 / math.sqrt(units) if scale == "inv_sqrt_depth" else scale
    model = LinearChain([torch.tensor(q) for q in qs]).double()

    profile = unit_profile(model, torch.tensor(x0), torch.tensor(targets), scale)

    # by hand: the stream, and the gradient of the summed cross-entropy at the output (softmax minus one-hot)
    x_l = x0
    for q in qs:
        x_l = x_l + s * x_l @ q.T
    p = np.exp(x_l - x_l.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g_out = p - np.eye(width)[targets]
    v0, g2 = np.mean(x0**2), np.mean(g_out**2)
    growth = (1 + s * s) ** np.arange(units)

    assert profile.scale == pytest.approx(s)
    assert profile.input_mean == pytest.approx([0.0] * units, abs=1e-12)
    assert profile.input_var == pytest.approx(list(v0 * growth), rel=1e-9)
    assert profile.output_var[-1] == pytest.approx(v0 * (1 + s * s) ** units, rel=1e-9)
    assert profile.forward_growth == pytest.approx((1 + s * s) ** units, rel=1e-9)
    assert profile.out_grad_var == pytest.approx(g2, rel=1e-9)
    assert profile.grad_var == pytest.approx(list(g2 * (1 + s * s) ** (units - np.arange(units))), rel=1e-9)
    assert profile.identity_share == pytest.approx([1 / (1 + s * s)] * units, rel=1e-9)
    assert profile.correlation == pytest.approx([0.0] * units, abs=1e-9)
    assert profile.mutated == []
    if scale == "inv_sqrt_depth":  # (1 + 1/L)^L: bounded by e whatever the depth
        assert 2.0 < profile.forward_growth < math.e


def test_independent_random_branches_add_their_variance_in_expectation() -> None:
    # W_l with independent N(0, 1/d) entries: E|x + sWx|^2 = |x|^2 (1 + s^2) (the cross term has mean 0), so the
    # average of Var(x_L) / Var(x_0) over independent draws tends to (1 + s^2)^L: 2^6 = 64 at s = 1, and
    # (1 + 1/6)^6 = 2.52 at s = 1/sqrt(6). 200 draws at d = 64 put the average within a few per cent.
    rng = np.random.default_rng(1)
    units, width, draws = 6, 64, 200
    x0 = torch.tensor(paired_batch(rng, 4, width))
    targets = torch.zeros(len(x0), dtype=torch.long)
    for scale, expected in ((1.0, 2.0**units), ("inv_sqrt_depth", (1 + 1 / units) ** units)):
        growths = []
        for _ in range(draws):
            weights = [torch.tensor(rng.standard_normal((width, width)) / math.sqrt(width)) for _ in range(units)]
            growths.append(unit_profile(LinearChain(weights).double(), x0, targets, scale).forward_growth)
        assert np.mean(growths) == pytest.approx(expected, rel=0.1)


def test_a_unit_that_overwrites_its_input_is_flagged() -> None:
    rng = np.random.default_rng(2)
    qs = [torch.tensor(skew_rotation(4, rng)) for _ in range(3)]
    x0 = torch.tensor(paired_batch(rng, 3, 4))
    targets = torch.zeros(len(x0), dtype=torch.long)
    assert unit_profile(LinearChain(qs).double(), x0, targets).mutated == []
    faulty = unit_profile(LinearChain(qs, OverwritingUnit).double(), x0.clone(), targets)
    assert faulty.mutated == ["units.0", "units.1", "units.2"]


def test_signal_study_end_to_end(bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["study", "signal", "--data", str(bars), "--depths", "8,14", "--seeds", "2", "--samples", "8"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "signal.json").read_text())
    assert payload["claim"] == CLAIM and payload["supported"] in (True, False, None)
    profiles = payload["numbers"]["profiles"]
    assert set(profiles) == {"resnet (post-act)", "resnet (pre-act)"}
    post = profiles["resnet (post-act)"]
    assert set(post) == {"batchnorm", "identity"}
    assert set(post["identity"]) == {"1", "0.3", "0.1", "1/sqrt(L)"}
    entry = post["identity"]["1/sqrt(L)"]["14"]
    assert entry["scale_value"] == pytest.approx(1 / math.sqrt(6))  # resnet at depth 14: 6 units
    assert len(entry["input_var"]) == 6 and entry["forward_growth"]["n"] == 2
    for key in ("forward_growth", "gradient_growth", "last_identity_share"):
        assert math.isfinite(entry[key]["mean"]) and entry[key]["mean"] > 0
    assert 0 < entry["last_identity_share"]["mean"] < 1
    assert post["identity"]["1"]["14"]["input_overwritten"] == []
    checks = {(c["name"], c["what"].split(":")[0]) for c in payload["checks"]}
    assert checks == {(n, net) for n in ("explodes", "bounded") for net in ("resnet (post-act)", "resnet (pre-act)")}
    growth = [c for c in payload["checks"] if c["name"] == "explodes" and c["what"].startswith("resnet (post-act)")]
    per_seed = post["identity"]["1"]
    expected = [
        b / a for a, b in zip(per_seed["8"]["per_seed_forward_growth"], per_seed["14"]["per_seed_forward_growth"])
    ]
    assert growth[0]["values"] == pytest.approx(expected) and growth[0]["threshold"]["value"] == 10.0
    markdown = (out / "signal.md").read_text()
    assert CLAIM in markdown and payload["verdict"] in markdown
    assert sorted(p.name for p in out.glob("signal-*.png")) == [
        "signal-forward-along-depth.png",
        "signal-gradient-along-depth.png",
        "signal-growth-vs-depth.png",
        "signal-identity-share.png",
    ]
