"""Checkpoint files: the two-phase commit survives a kill at any point; tampering is detected."""

from __future__ import annotations

import json
import os

import pytest
import torch

from resnets import create_model
from resnets.errors import CheckpointError
from resnets.runs import checkpoint as ckpt
from resnets.runs.checkpoint import load_checkpoint, save_checkpoint, verify

from .conftest import TINY


def _state(step: int) -> dict:
    return {"step": step, "epoch": 0, "batch": step, "note": torch.tensor([step])}


def test_save_and_load_round_trip(tmp_path):
    model = create_model(TINY)
    save_checkpoint(tmp_path, model, TINY, _state(3), best=True)
    other = create_model(TINY)
    state = load_checkpoint(tmp_path, other)
    assert state["step"] == 3 and torch.equal(state["note"], torch.tensor([3]))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    files = json.loads((tmp_path / "last.json").read_text())["files"]
    assert set(files) == {"last.safetensors", "last.state.pt", "best.safetensors"}


def test_a_kill_before_the_renames_finishes_the_commit_on_resume(tmp_path, monkeypatch):
    model = create_model(TINY)
    save_checkpoint(tmp_path, model, TINY, _state(1), best=True)
    monkeypatch.setattr(ckpt, "_commit", lambda directory: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, TINY, _state(2), best=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "last.json").read_text())["step"] == 1
    assert verify(tmp_path)["step"] == 2  # the staged files were complete: the commit is finished
    assert load_checkpoint(tmp_path, create_model(TINY))["step"] == 2


def test_a_kill_half_way_through_the_renames_is_recovered(tmp_path, monkeypatch):
    model = create_model(TINY)
    save_checkpoint(tmp_path, model, TINY, _state(1), best=False)
    real_replace, calls = os.replace, []

    def replace_once(src, dst, **where):
        calls.append(dst)
        if len(calls) == 3:  # pending manifest written, last.safetensors moved, then killed
            raise KeyboardInterrupt
        real_replace(src, dst, **where)

    monkeypatch.setattr(ckpt.os, "replace", replace_once)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, TINY, _state(2), best=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path, create_model(TINY))["step"] == 2


def test_a_changed_state_file_is_refused(tmp_path):
    save_checkpoint(tmp_path, create_model(TINY), TINY, _state(1), best=False)
    with open(tmp_path / "last.state.pt", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(CheckpointError, match="last.state.pt.*sha256"):
        load_checkpoint(tmp_path, create_model(TINY))


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        verify(tmp_path)
