"""`open_run`: one reader of run directories, with the checkpoint verified and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnets.errors import CheckpointError, ConfigError
from resnets.runs import open_run


def test_a_run_opens_with_its_record_model_and_loaders(run_dir: Path) -> None:
    run = open_run(run_dir)
    recorded = json.loads((run_dir / "config.json").read_text())
    assert run.record.model == "resnet20" and run.record.data.classes == ["ant", "bee", "cat"]
    assert run.record.data.mean == recorded["data"]["mean"] and run.classes == ["ant", "bee", "cat"]
    assert run.checkpoint == run_dir / "checkpoints" / "last.safetensors" and not run.model.training
    x, y = next(iter(run.loader("test").epoch_batches(0)))
    assert x.shape == (12, 1, 8, 8) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert abs(float(next(iter(run.loader("train").epoch_batches(0)))[0].mean())) < 0.2  # normalised
    with pytest.raises(Exception, match="has no val split"):
        run.loader("val")


def test_open_run_refuses_what_it_cannot_trust(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="contradicts the run directory"):
        open_run(run_dir, model="resnet32")
    with pytest.raises(ConfigError, match="has no best checkpoint"):
        open_run(run_dir, checkpoint="best")
    weights = run_dir / "checkpoints" / "last.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # one flipped bit inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was changed"):
        open_run(run_dir)
    weights.unlink()
    with pytest.raises(CheckpointError, match="no checkpoints/last.safetensors"):
        open_run(run_dir)
    (run_dir / "config.json").write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        open_run(run_dir)


def test_a_checkpoint_file_inside_a_run_opens_as_that_run(trained_run) -> None:
    run_dir = trained_run(args=("--val-size", "3"))
    best = open_run(run_dir)
    assert best.checkpoint.name == "best.safetensors" and best.record.selection == "val"
    last = open_run(run_dir / "checkpoints" / "last.safetensors")
    assert last.checkpoint.name == "last.safetensors" and last.record == best.record
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            open_run(run_dir, checkpoint="last").model.state_dict().values(), last.model.state_dict().values()
        )
    )
