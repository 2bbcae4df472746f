"""Every file a run writes gets 0666 less the umask, as a plain ``open`` gives: run directories are for sharing.

safetensors creates its files 0600, so without a fix the weights (and nothing else) were private to their owner.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets.io.atomic import atomic_write_text
from resnets.runs.checkpoint import save_checkpoint, save_snapshot
from resnets.train import resume_config, train
from tests.train.conftest import tiny_bundle, tiny_config


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """``umask(mask)`` sets the process umask for the test; the old one is put back after it."""
    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_every_file_of_a_resumed_run_is_0644_under_umask_022(tmp_path: Path, umask, monkeypatch) -> None:
    umask(0o022)
    # curves.png as reports.curves writes it (atomic_write), without matplotlib's seconds of drawing
    monkeypatch.setattr(
        "resnets.train.engine._plot", lambda run, *_, **__: atomic_write_text(run.path / "curves.png", "")
    )
    run = tmp_path / "run"
    bundle = tiny_bundle(val=16)  # a validation split: best.safetensors too
    train(tiny_config(run, max_steps=2, snapshot_steps=[0, 1]), data=bundle)
    train(resume_config(run, {"max_steps": 3}), data=bundle, resume=True)  # rotates last.* to previous.*
    modes = _modes(run)
    for name in (
        "config.json",
        "env.json",
        "summary.json",
        "metrics.csv",
        "steps.csv",
        "curves.png",
        "checkpoints/last.safetensors",
        "checkpoints/last.state.pt",
        "checkpoints/last.json",
        "checkpoints/previous.safetensors",
        "checkpoints/previous.state.pt",
        "checkpoints/previous.json",
        "checkpoints/best.safetensors",
        "checkpoints/step-0.safetensors",
        "checkpoints/step-1.safetensors",
        "checkpoints/snapshots.json",
    ):
        assert name in modes, name
    files = {name: oct(mode) for name, mode in modes.items() if not (run / name).is_dir()}
    assert files == {name: "0o644" for name in files}
    folders = {name: oct(mode) for name, mode in modes.items() if (run / name).is_dir()}
    assert folders == {"checkpoints": "0o755"}


def test_checkpoint_files_follow_the_umask_not_a_fixed_mode(tmp_path: Path, umask) -> None:
    umask(0o007)  # a group-shared project folder: rw for the group, nothing for others
    model = nn.Linear(3, 2)
    torch.manual_seed(0)
    state = {"step": 5, "epoch": 1, "batch": 0}
    save_checkpoint(tmp_path, model, "linear", state, best=True)
    save_checkpoint(tmp_path, model, "linear", {**state, "step": 10}, best=False)
    save_snapshot(tmp_path, model, "linear", 10)
    modes = {name: oct(mode) for name, mode in _modes(tmp_path).items()}
    assert set(modes) == {
        "last.safetensors",
        "last.state.pt",
        "last.json",
        "previous.safetensors",
        "previous.state.pt",
        "previous.json",
        "best.safetensors",
        "step-10.safetensors",
        "snapshots.json",
    }
    assert modes == {name: "0o660" for name in modes}
