"""The paths instrument: path counts against brute-force enumeration, and single-path gradients against an
independent computation (one ordinary backward pass through a graph with the other routes detached)."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.models import create_at_depth
from resnets.studies import Context, paths
from resnets.studies.paths import PathTrace, path_length_counts, shortest_range
from resnets.studies.plans import RunSpec
from resnets.studies.trained import open_trained, train_run
from tests.helpers import randomize_bn


@pytest.mark.parametrize("n", range(11))
def test_path_counts_are_the_binomial_by_enumeration(n: int) -> None:
    # every path picks branch (1) or shortcut (0) at each unit; its length is the number of branches
    lengths = Counter(sum(choice) for choice in itertools.product((0, 1), repeat=n))
    counts = path_length_counts(n)
    assert counts == [lengths[k] for k in range(n + 1)]
    assert sum(counts) == 2**n
    assert counts == [math.comb(n, k) for k in range(n + 1)]


def test_shortest_range_by_hand() -> None:
    assert shortest_range([0, 1, 8, 1, 0], 0.8) == (2, 2)
    assert shortest_range([0, 1, 8, 1, 0], 0.85) == (1, 2)  # 9/10: the two lengths 1-2 and 2-3 tie; lower first
    assert shortest_range([1, 1, 1, 1], 1.0) == (0, 3)
    assert shortest_range([5, 0, 0, 5], 0.5) == (0, 0)
    # C(10, k): 90% of 1024 paths is 921.6; lengths 3..7 hold 912 (too few) and 2..7 hold 957
    assert shortest_range(path_length_counts(10), 0.9) == (2, 7)


@contextmanager
def _only_path(blocks: list, active: set[int]) -> Iterator[None]:
    """Each unit outputs post(scale * F + s) with F detached outside ``active`` and s detached inside it: the
    forward values are unchanged and an ordinary backward pass follows exactly one path."""
    with ExitStack() as stack:
        for info in blocks:
            seen: dict[str, torch.Tensor] = {}

            def tap(branch: torch.Tensor, shortcut: torch.Tensor | None, seen: dict = seen) -> None:
                seen["b"], seen["s"] = branch, shortcut

            def hook(module, args, output, seen: dict = seen, keep: bool = info.index in active):
                b, s = seen["b"], seen["s"]
                b, s = (b, s.detach()) if keep else (b.detach(), s)
                return module.post(module.residual_scale * b + s)

            stack.enter_context(info.unit.tapped(tap))
            stack.callback(info.module.register_forward_hook(hook).remove)
        yield


def _first_input(model: torch.nn.Module, blocks: list, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss's gradient at the first unit's input, by one backward pass of whatever graph the model builds."""
    held: dict[str, torch.Tensor] = {}

    def pre(module, args):
        held["x"] = args[0]

    handle = blocks[0].module.register_forward_pre_hook(pre)
    try:
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    finally:
        handle.remove()
    return torch.autograd.grad(loss, held["x"])[0]


def _tiny(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "resnet8":
        model, x = create_at_depth("resnet20", 8, in_channels=1, num_classes=3), torch.randn(4, 1, 8, 8)
    elif name == "preact":
        model = resnets.create_model("preact_resnet110", layers=(1, 1, 1), in_channels=1, num_classes=3)
        x = torch.randn(4, 1, 8, 8)
    else:
        model, x = (
            resnets.create_model("highway_fc_10", depth=6, width=8, num_classes=3, in_channels=5),
            torch.randn(4, 5),
        )
    return randomize_bn(model).double(), x.double()


@pytest.mark.parametrize("name", ["resnet8", "preact", "highway"])
def test_path_gradients_match_backprop_with_the_other_routes_detached(name: str) -> None:
    model, x = _tiny(name)
    blocks = model.residual_blocks()
    y = torch.tensor([0, 1, 2, 1])
    trace = PathTrace(model, blocks, x.clone(), y)
    n = len(blocks)
    paths = [set(s) for k in range(n + 1) for s in itertools.combinations(range(n), k)]
    total = torch.zeros_like(trace.full_gradient())
    for active in paths:
        ours = trace.path_gradient(active)
        with _only_path(blocks, active):
            theirs = _first_input(model, blocks, x.clone().requires_grad_(True), y)
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-8)
        total += ours
    # the path expansion is exact: all 2^n paths sum to the ordinary gradient
    torch.testing.assert_close(total, _first_input(model, blocks, x.clone().requires_grad_(True), y).float())
    assert len(paths) == 2**n


def test_path_through_no_branch_is_the_gradient_at_the_top_for_identity_shortcuts() -> None:
    # pre-activation units with identity shortcuts and no post: the shortcut-only path is the identity map
    torch.manual_seed(0)
    model = resnets.create_model(
        "preact_resnet110", layers=(3,), widths=(4,), stem_width=4, in_channels=1, num_classes=3
    )
    model = randomize_bn(model).double()
    trace = PathTrace(model, model.residual_blocks(), torch.randn(2, 1, 6, 6, dtype=torch.double), torch.tensor([0, 2]))
    torch.testing.assert_close(trace.path_gradient(set()), trace.top.float())


def test_plain_nets_are_refused() -> None:
    model = create_at_depth("plain20", 8, in_channels=1, num_classes=3).eval()
    with pytest.raises(ConfigError, match="no shortcut"):
        PathTrace(model, model.residual_blocks(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_cli_end_to_end(batch_bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    argv = ["study", "paths", "--data", str(batch_bars), "--seeds", "2", "--samples", "4", "--steps", "4"]
    argv += ["--model", "resnet20"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "paths.json").read_text())
    assert set(payload) >= {"name", "claim", "verdict", "supported", "settings", "numbers", "table", "figures"}
    (measured,) = payload["numbers"]["runs"].values()
    assert measured["units"] == 9 and measured["paths"] == 512 and sum(measured["path_counts"]) == 512
    assert all(math.isfinite(s["mean"]) and s["mean"] >= 0 for s in measured["per_path_gradient"])
    assert abs(sum(measured["gradient_share"]) - 1) < 1e-9
    assert payload["settings"]["bn"].startswith("eval-mode")
    text = (out / "paths.md").read_text()
    assert "Veit" in text and "Verdict" in text
    assert list(out.glob("paths-*.png"))


def test_a_dead_net_is_one_clear_error(batch_bars: Path, tmp_path: Path) -> None:
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    path = train_run(context, RunSpec("resnet20", "r", 1, snapshots=0, model_options={"layers": (1, 1, 1)}))
    run = open_trained(context, path, "r").run
    with torch.no_grad():
        run.model.fc.weight.zero_()  # nothing reaches the units from the loss: every path's gradient is 0
    with pytest.raises(ConfigError, match="dead net"):
        paths.measure_run(run, batch=4, seeds=1, context=context, label="r", show=False)
