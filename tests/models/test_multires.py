"""Multi-residual blocks: y = relu(x + sum_i F_i(x)); k = 1 is the basic block; the model's options."""

from __future__ import annotations

import torch

from resnets import create_model
from resnets.layers.basic import BasicBlock
from resnets.layers.multi_residual import MultiResidualBlock
from tests.helpers import randomize_bn


def test_block_sums_every_branch_and_the_identity() -> None:
    block = MultiResidualBlock(8, 8, num_residuals=3).eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    expected = torch.relu(x + sum(branch(x) for branch in block.branches))
    assert torch.allclose(block(x), expected, atol=1e-5)
    for branch in block.branches[1:]:  # lesioning all branches but one leaves a basic block
        branch[-1].weight.data.zero_()
        branch[-1].bias.data.zero_()
    assert torch.allclose(block(x), torch.relu(x + block.branches[0](x)), atol=1e-6)


def test_one_branch_is_the_basic_block() -> None:
    multi, basic = (
        MultiResidualBlock(8, 16, 2, num_residuals=1, shortcut="A").eval(),
        BasicBlock(8, 16, 2, shortcut="A").eval(),
    )
    randomize_bn(basic)
    keys = dict(zip(["0", "1", "3", "4"], ["conv1", "bn1", "conv2", "bn2"]))
    state = {f"branches.0.{k}.{p}": v for k, mod in keys.items() for p, v in getattr(basic, mod).state_dict().items()}
    multi.load_state_dict(state)
    x = torch.randn(2, 8, 8, 8)
    assert torch.allclose(multi(x), basic(x), atol=1e-6)


def test_model_has_k_times_the_branch_parameters() -> None:
    counts = {
        k: sum(p.numel() for p in create_model("multires_cifar_k2", num_residuals=k).parameters()) for k in (1, 2, 3)
    }
    resnet20 = sum(p.numel() for p in create_model("resnet20").parameters())
    assert counts[1] == resnet20 == 269_722
    assert counts[3] - counts[2] == counts[2] - counts[1] > 0
    blocks = create_model("multires_cifar_k4").residual_blocks()
    assert len(blocks) == 9 and all(len(b.module.branches) == 4 for b in blocks)
