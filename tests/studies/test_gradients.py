"""``resnets study gradients``: layer gradient norms against a closed form, depth matching, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnets.cli import main
from resnets.models import create_model
from resnets.studies.gradients import CLAIM, layer_gradient_norms
from resnets.studies.untrained import batch_statistics, build_near


class TwoLinear(nn.Module):
    """logits = W2 W1 x, with the classifier registered before the hidden layer (forward order != module order)."""

    def __init__(self, w1: np.ndarray, w2: np.ndarray) -> None:
        super().__init__()
        self.out = nn.Linear(w2.shape[1], w2.shape[0], bias=False, dtype=torch.float64)
        self.hidden = nn.Linear(w1.shape[1], w1.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.out.weight.copy_(torch.tensor(w2))
            self.hidden.weight.copy_(torch.tensor(w1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def test_layer_gradient_norms_match_the_closed_form_of_a_linear_net() -> None:
    # L = mean_i CE(W2 W1 x_i, y_i). With Z = X W1^T W2^T, P = softmax(Z) and G = (P - onehot(Y)) / N:
    # dL/dW2 = G^T (X W1^T) and dL/dW1 = (G W2)^T X.
    rng = np.random.default_rng(0)
    n, a, h, c = 7, 5, 4, 3
    x, w1, w2 = rng.standard_normal((n, a)), rng.standard_normal((h, a)), rng.standard_normal((c, h))
    y = rng.integers(0, c, n)
    z = x @ w1.T @ w2.T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = (p - np.eye(c)[y]) / n
    expected = [np.linalg.norm((g @ w2).T @ x), np.linalg.norm(g.T @ (x @ w1.T))]

    model = TwoLinear(w1, w2)
    names, norms = layer_gradient_norms(model, torch.tensor(x), torch.tensor(y))

    assert names == ["hidden", "out"]
    assert norms == pytest.approx(expected, rel=1e-10)
    assert model.hidden.weight.grad is None and model.out.weight.grad is None  # .grad left alone


def test_batch_statistics_puts_only_norms_in_training_mode_and_restores() -> None:
    model = create_model("resnet20", num_classes=3, in_channels=1, layers=(1, 1, 1), drop_path_rate=0.1).train()
    with batch_statistics(model):
        norms = [m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        others = [m.training for m in model.modules() if not isinstance(m, nn.BatchNorm2d)]
        assert norms and all(norms) and not any(others)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    ("name", "depth", "expected"),
    [
        ("resnet20", 20, 20),
        ("resnet20", 21, 20),
        ("plain20", 56, 56),
        ("highway_cifar19", 20, 19),
        ("highway_cifar19", 14, 13),
    ],
)
def test_build_near_picks_the_nearest_depth_the_family_has(name: str, depth: int, expected: int) -> None:
    # CIFAR ResNets and plain nets have 6n+2 weighted layers, convolutional Highway nets 3n+4
    model, actual = build_near(name, depth, seed=0, num_classes=3, in_channels=1)
    assert actual == expected
    n = (expected - 2) // 6 if name.startswith(("resnet", "plain")) else (expected - 4) // 3
    assert len(model.residual_blocks()) == 3 * n


def test_gradients_study_end_to_end(batch_bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["study", "gradients", "--data", str(batch_bars), "--depths", "8,14", "--seeds", "2", "--samples", "6"]
    argv += ["--model", "resnet20", "--model", "plain20", "--model", "highway_cifar19"]
    assert main([*argv, "--steps", "2", "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "gradients.json").read_text())
    assert payload["claim"] == CLAIM and payload["supported"] in (True, False, None)
    init = payload["numbers"]["init"]
    assert set(init) == {"resnet20", "plain20", "highway_cifar19"}
    assert init["highway_cifar19"]["depths"] == [7, 13] and init["resnet20"]["depths"] == [8, 14]
    assert [init[n]["role"] for n in ("resnet20", "plain20", "highway_cifar19")] == ["residual", "plain", "highway"]
    entry = init["resnet20"]["by_depth"]["14"]
    # resnet at depth 14: stem + 12 convs + the classifier (option-A shortcuts have no weights)
    assert entry["layers"][0] == "conv1" and entry["layers"][-1] == "fc" and len(entry["layers"]) == 14
    assert entry["first_last"]["n"] == 2
    assert all(math.isfinite(v) and v > 0 for norms in entry["norms"] for v in norms)
    trained = payload["numbers"]["trained"]
    assert [t["model"] for t in trained] == ["resnet20", "plain20", "highway_cifar19"]
    assert set(trained[0]["checkpoints"]) == {"step-0", "step-1", "step-2"}
    assert math.isfinite(trained[0]["checkpoints"]["step-2"]["first_last"]["mean"])
    markdown = (out / "gradients.md").read_text()
    assert CLAIM in markdown and payload["verdict"] in markdown
    assert {p.name for p in out.glob("gradients-*.png")} == {
        "gradients-ratio-vs-depth.png",
        "gradients-layers-init.png",
        "gradients-layers-trained.png",
    }
