"""Looks-linear initialisation: CReLU with mirrored weights makes a plain net affine at initialisation."""

from __future__ import annotations

import torch

from resnets import create_model
from resnets.layers.looks_linear import CReLU, looks_linear_


def test_mirrored_weights_undo_the_crelu() -> None:
    weight = looks_linear_(torch.empty(5, 8))
    assert torch.equal(weight[:, 4:], -weight[:, :4])
    x = torch.randn(3, 4)
    assert torch.allclose(CReLU()(x) @ weight.T, x @ weight[:, :4].T, atol=1e-6)


def _affine_defect(name: str, **options) -> float:
    """max |f(x + y) - f(y) - f(x) + f(0)| relative to max |f(x)|, for BN in eval mode."""
    model = create_model(name, **options).eval()
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        defect = model(x + y) - model(y) - (model(x) - model(torch.zeros_like(x)))
        return (defect.abs().max() / model(x).abs().max()).item()


def test_looks_linear_net_is_affine_at_init() -> None:
    assert _affine_defect("plain_ll_cifar20") < 1e-5
    assert _affine_defect("plain_ll_cifar20", layers=(10, 10, 10)) < 1e-5, "deeper too"


def test_without_the_mirror_the_net_is_not_affine() -> None:
    assert _affine_defect("plain_ll_cifar20", init="orthogonal") > 1e-2


def test_training_breaks_the_linearity() -> None:
    model = create_model("plain_ll_cifar20", layers=(2, 2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
    unit = model.layer1[0]
    half = unit.conv.weight.shape[1] // 2
    assert not torch.allclose(unit.conv.weight[:, half:], -unit.conv.weight[:, :half])
