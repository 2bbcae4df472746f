"""The lesion instrument against values known without it: zero branches, exchanged weights, the architecture."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.device import Precision
from resnets.errors import LesionError
from resnets.studies.common import error_rate
from resnets.studies.lesion import (
    k_deletions,
    single_lesions,
    swap_pairs,
    swapped_errors,
)
from resnets.studies.reorder import rearranged

FP32 = Precision(device=torch.device("cpu"), amp=False, dtype=torch.float32, channels_last=False)


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 1, 8, 8), torch.randint(0, 3, (n,))


def _hand_error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return int((model(x).argmax(1) != y).sum()) / len(y)


def test_lesioning_zero_branches_changes_nothing() -> None:
    """With the last BN scale of every branch zero, F(x) = 0: a lesioned unit outputs what it did before."""
    model = create_model("resnet20", num_classes=3, in_channels=1, zero_init_last=True).eval()
    x, y = _data()
    with torch.no_grad():
        logits = model(x)
    blocks = model.residual_blocks()
    for info in blocks:
        with info.lesioned(), torch.no_grad():
            assert torch.equal(model(x), logits), info.name
    errors = single_lesions(model, blocks, [(x, y)], FP32)
    assert errors == [_hand_error(model, x, y)] * len(blocks)
    pool = [b.index for b in blocks if not b.changes_shape]
    deleted = k_deletions(model, blocks, pool, [(x, y)], FP32, draws=2, rng=random.Random(0))
    assert all(e == _hand_error(model, x, y) for errs in deleted.values() for e in errs)


def test_lesioning_one_silenced_unit_changes_nothing_but_others_do() -> None:
    model = create_model("resnet20", num_classes=3, in_channels=1).eval()
    blocks = model.residual_blocks()
    silenced = blocks[4].module
    torch.nn.init.zeros_(silenced.bn2.weight)  # F(x) = bn2(...) = 0 * z + 0
    torch.nn.init.zeros_(silenced.bn2.bias)
    x, _ = _data()
    with torch.no_grad():
        logits = model(x)
        with blocks[4].lesioned():
            assert torch.equal(model(x), logits)
        with blocks[5].lesioned():
            assert not torch.allclose(model(x), logits)


def test_k_deletions_draw_distinct_subsets_or_all_of_them() -> None:
    model = create_model("resnet20", num_classes=3, in_channels=1, zero_init_last=True).eval()
    blocks = model.residual_blocks()
    deleted = k_deletions(model, blocks, [0, 1, 2], [_data(4)], FP32, draws=2, rng=random.Random(1))
    assert {k: len(v) for k, v in deleted.items()} == {1: 2, 2: 2, 3: 1}  # C(3,1)=3 > 2, C(3,3)=1


def test_plain_downsampling_units_cannot_be_deleted() -> None:
    model = create_model("plain20", num_classes=3, in_channels=1).eval()
    x, y = _data()
    errors = single_lesions(model, model.residual_blocks(), [(x, y)], FP32)
    assert [i for i, e in enumerate(errors) if e is None] == [3, 6]  # layer2.0 and layer3.0 halve the resolution
    with pytest.raises(LesionError), model.residual_blocks()[3].lesioned():
        pass


def test_swap_pairs_are_the_equal_shape_units_of_each_stage() -> None:
    blocks = create_model("resnet20", num_classes=3, in_channels=1).residual_blocks()
    assert swap_pairs(blocks) == [(0, 1), (0, 2), (1, 2), (4, 5), (7, 8)]


def test_swapping_units_equals_exchanging_their_weights() -> None:
    """Running layer1.2 before layer1.1 is the net whose state dict has their weights exchanged."""
    model = create_model("resnet20", num_classes=3, in_channels=1)
    for info in model.residual_blocks():  # non-trivial running statistics
        info.module.bn2.running_mean.uniform_(-0.5, 0.5)
    model.eval()
    state = model.state_dict()
    exchanged = {}
    for key, value in state.items():
        key = key.replace("layer1.1.", "@").replace("layer1.2.", "layer1.1.").replace("@", "layer1.2.")
        exchanged[key] = value
    twin = create_model("resnet20", num_classes=3, in_channels=1)
    twin.load_state_dict(exchanged)
    twin.eval()
    x, y = _data()
    blocks = model.residual_blocks()
    with torch.no_grad():
        original, expected = model(x), twin(x)
        with rearranged(model, blocks, [0, 2, 1, 3, 4, 5, 6, 7, 8]):
            swapped = model(x)
        assert torch.allclose(swapped, expected, atol=1e-6)
        assert not torch.allclose(swapped, original)
        assert torch.equal(model(x), original)  # restored on exit
    assert swapped_errors(model, blocks, [(1, 2)], [(x, y)], FP32) == [_hand_error(twin, x, y)]
    assert error_rate(model, [(x, y)], FP32) == _hand_error(model, x, y)


def test_rearranged_refuses_units_of_other_shapes() -> None:
    model = create_model("resnet20", num_classes=3, in_channels=1)
    order = list(range(9))
    order[1], order[4] = 4, 1  # 16 channels <-> 32 channels
    with (
        pytest.raises(LesionError, match="equal input and output shape"),
        rearranged(model, model.residual_blocks(), order),
    ):
        pass


def test_cli_writes_json_markdown_and_figures(batch_bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["study", "lesion", "--data", str(batch_bars), "--seeds", "1", "--samples", "12", "--steps", "4"]
    argv += ["--model", "resnet20", "--model", "plain20"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "lesion.json").read_text())
    assert {"claim", "verdict", "supported", "settings", "numbers", "table", "figures"} <= set(payload)
    models = payload["numbers"]["models"]
    assert set(models) == {"resnet20", "plain20"}
    for m in models.values():
        assert math.isfinite(m["baseline_error"]["mean"])
        assert [c["k"] for c in m["k_deleted"]] == list(range(1, 8))
        assert all(math.isfinite(c["error"]["mean"]) for c in m["k_deleted"])
        assert len(m["swaps"]) == 5
    assert models["plain20"]["not_deletable"] == ["layer2.0", "layer3.0"]
    assert models["resnet20"]["not_deletable"] == []
    text = (out / "lesion.md").read_text()
    assert "Veit" in text and payload["verdict"] in text
    assert payload["figures"] and all((out / name).is_file() for name in payload["figures"])


class _Hidden(torch.nn.Module):
    """Runs its units from a plain Python list, behind its containers' back: a rearrangement cannot reach them."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.order = [b.module for b in model.residual_blocks()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.order:
            x = unit(x)
        return x


def test_rearranged_refuses_a_forward_that_ignores_the_containers() -> None:
    model = create_model("resnet20", num_classes=3, in_channels=1).eval()
    hidden = _Hidden(model)
    blocks = model.residual_blocks()[:3]  # stage 1: three 16-channel units
    x = torch.randn(2, 16, 8, 8)
    refused = pytest.raises(RuntimeError, match="did not run its units in the rearranged order")
    with refused, rearranged(model, blocks, [1, 0, 2]), torch.no_grad():
        hidden(x)
