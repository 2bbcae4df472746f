"""timm's ResNet-D and SE-ResNet state dicts load unchanged into ours, and the two compute the same logits.

The weights are random (no download); batch-norm statistics and affine terms are randomised too, so that
every branch, including the zero-initialised last norm of each block, takes part in the comparison.
"""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.io.weight_files import load_weights

timm = pytest.importorskip("timm")


def randomised_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every float tensor replaced by seeded noise of a sensible scale."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5  # positive, near 1
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
        elif value.dim() == 1:  # norm scales
            state[key] = 1 + 0.1 * torch.randn(value.shape, generator=generator)
        else:  # conv and linear weights, He-scaled so activations neither vanish nor explode
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2 / fan_in) ** 0.5
    return state


@pytest.mark.parametrize(("timm_name", "ours"), [("resnet50d", "resnet50d"), ("seresnet50", "se_resnet50")])
def test_timm_state_dict_loads_unchanged_and_outputs_match(timm_name: str, ours: str) -> None:
    reference = timm.create_model(timm_name, pretrained=False).eval()
    state = randomised_state(reference)
    reference.load_state_dict(state, strict=True)
    model = create_model(ours).eval()
    assert sorted(model.state_dict()) == sorted(state)  # the same module names: no renaming table
    report = load_weights(model, state)  # strict
    assert report.ok
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert expected.shape == got.shape == (1, 1000)
    assert expected.abs().max() > 1e-3  # the comparison is of logits that carry signal, not of zeros
    torch.testing.assert_close(got, expected)  # fp32 defaults: rtol 1.3e-6, atol 1e-5
