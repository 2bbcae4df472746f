"""DenseNets: the papers' parameter counts, torchvision parity, checkpointed concatenation, dense layers listed."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.layers.dense import DenseLayer
from resnets.models.profile import build_meta, count_parameters


@pytest.mark.parametrize(("name", "expected"), [("densenet_bc_100_12", 769_162), ("densenet121", 7_978_856)])
def test_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(build_meta(name)) == expected


def test_densenet121_loads_torchvision_state_dict_and_matches_outputs() -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.densenet121(weights=None).eval()
    model = create_model("densenet121").eval()
    state = reference.state_dict()
    assert list(model.state_dict()) == list(state), "same keys in the same order"
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)


def test_cifar_layout() -> None:
    model = create_model("densenet_bc_100_12")
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.out_channels == 24
    assert not hasattr(model.features, "pool0")
    # 24 + 16 * 12 = 216 -> 108 -> 108 + 192 = 300 -> 150 -> 150 + 192 = 342 channels at the end.
    assert model.num_features == 342
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 342, 8, 8)


def test_dense_layers_are_the_listed_units_with_block_as_stage() -> None:
    blocks = create_model("densenet_bc_100_12").residual_blocks()
    assert len(blocks) == 48 and all(isinstance(b.module, DenseLayer) for b in blocks)
    assert [b.stage for b in blocks] == [1] * 16 + [2] * 16 + [3] * 16
    assert blocks[16].name == "features.denseblock2.denselayer1"


def test_memory_efficient_mode_gives_the_same_outputs_and_gradients() -> None:
    options = {"block_config": (3, 3), "growth_rate": 6}
    plain = create_model("densenet_bc_100_12", **options)
    efficient = create_model("densenet_bc_100_12", memory_efficient=True, **options)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    outputs = []
    for model in (plain, efficient):
        out = model(x)
        out.square().sum().backward()
        outputs.append(out)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    assert efficient.features.denseblock1.denselayer1.memory_efficient
    # the recomputed bottleneck does not move norm1's running statistics a second time
    for (name, b), c in zip(plain.named_buffers(), efficient.buffers()):
        assert torch.equal(b, c), name
    assert int(efficient.features.denseblock1.denselayer1.norm1.num_batches_tracked) == 1
