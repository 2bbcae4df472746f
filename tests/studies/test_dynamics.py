"""The dynamics study: branch/shortcut ratios and BN scales per unit over snapshots, against known values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.runs import open_run
from resnets.studies import Context, dynamics
from resnets.studies.common import subset_batches
from resnets.studies.plans import RunSpec
from resnets.studies.trained import open_trained, train_run


def test_the_branch_norm_is_the_last_norm_of_the_branch_not_of_the_shortcut() -> None:
    model = create_model("resnet20", layers=(1, 1, 1), shortcut="B")  # option B: a BN in the shortcut
    blocks = model.residual_blocks()
    assert all(dynamics.branch_norm(info) is info.unit.bn2 for info in blocks)
    assert isinstance(blocks[1].unit.downsample[1], torch.nn.BatchNorm2d)  # there was one to exclude


@pytest.fixture
def tiny_run(batch_bars: Path, tmp_path: Path) -> Path:
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    return train_run(context, RunSpec("resnet20", "r", 2, snapshots=3, model_options={"layers": (1, 1, 1)}))


def test_ratios_follow_the_branch_bn_scale_exactly(tiny_run: Path) -> None:
    run = open_run(tiny_run)
    batches = subset_batches(run, 24, 0)
    before = dynamics.unit_statistics(run, batches)
    unit = run.model.residual_blocks()[2].unit
    with torch.no_grad():
        unit.bn2.bias.zero_()
    zero_bias = dynamics.unit_statistics(run, batches)
    with torch.no_grad():
        unit.bn2.weight.mul_(2.0)  # BN in eval mode with zero shift: the branch doubles exactly
    doubled = dynamics.unit_statistics(run, batches)
    assert doubled["ratio"][2] == pytest.approx(2 * zero_bias["ratio"][2], rel=1e-5)
    assert doubled["bn_scale"][2] == pytest.approx(2 * before["bn_scale"][2], rel=1e-6)
    assert doubled["ratio"][:2] == zero_bias["ratio"][:2] == before["ratio"][:2]  # earlier units are unchanged
    with torch.no_grad():
        unit.bn2.weight.zero_()
    silenced = dynamics.unit_statistics(run, batches)
    assert silenced["ratio"][2] == 0.0 and silenced["bn_scale"][2] == 0.0


def test_runs_without_snapshots_or_shortcuts_are_refused(batch_bars: Path, tmp_path: Path) -> None:
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    bare = train_run(context, RunSpec("resnet20", "b", 1, snapshots=0, model_options={"layers": (1, 1, 1)}))
    with pytest.raises(ConfigError, match="--snapshot-every"):
        dynamics.measure_run(open_trained(context, bare, "bare"), dynamics.Options(), context)
    plain = train_run(context, RunSpec("plain20", "p", 1, snapshots=2, model_options={"layers": (1, 1, 1)}))
    with pytest.raises(ConfigError, match="without shortcuts"):
        dynamics.measure_run(open_trained(context, plain, "plain"), dynamics.Options(), context)


def test_cli_follows_every_snapshot(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "dynamics", "--data", str(batch_bars), "--steps", "4", "--samples", "24", "--seeds", "1"]
    argv += ["--model", "resnet20"]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "dynamics.json").read_text())
    measured = saved["numbers"]["runs"]["resnet20"]
    assert [s["step"] for s in measured["snapshots"]] == [0, 1, 2, 3, 4] and measured["units"] == 9
    first = measured["snapshots"][0]
    assert first["bn_scale"] == [1.0] * 9  # BN's scale starts at 1 in every unit
    for snapshot in measured["snapshots"]:
        assert sum(snapshot["gradient_share"]) == pytest.approx(1.0)
        assert len(snapshot["ratio"]) == 9 and all(math.isfinite(r) and r > 0 for r in snapshot["ratio"])
    trend = saved["numbers"]["trends"]["resnet20"]
    assert trend["ratio"]["first"] == pytest.approx(sum(first["ratio"]) / 9)
    assert trend["gradient_mean_length"]["last"] == measured["snapshots"][-1]["gradient_mean_length"]
    assert (tmp_path / "dynamics-resnet20.png").read_bytes()[:4] == b"\x89PNG"
