"""Checkpoint safety: a crafted run directory cannot make a resume write outside ``checkpoints/``, and a
damaged last checkpoint falls back to the previous generation instead of ending the run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from resnets import create_model
from resnets.cli import main
from resnets.errors import CheckpointError
from resnets.runs.checkpoint import PENDING, load_checkpoint, restore_checkpoint, save_checkpoint, verify
from resnets.train import resume_config, train
from tests.train.conftest import TINY, tiny_bundle, tiny_config


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(TINY)


def _state(step: int) -> dict:
    return {"step": step, "epoch": 0, "batch": step}


def _two_generations(directory: Path) -> list[nn.Module]:
    """Saves at steps 1 (with best) and 2: previous.* then hold step 1, last.* step 2."""
    models = [_model(1), _model(2)]
    save_checkpoint(directory, models[0], TINY, _state(1), best=True)
    save_checkpoint(directory, models[1], TINY, _state(2), best=False)
    return models


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit inside the last tensor (or the pickle's tail)
    path.write_bytes(bytes(data))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _write_pending(directory: Path, files: dict[str, str], **extra: object) -> None:
    (directory / PENDING).write_text(json.dumps({"format": "resnets-checkpoint-1", "step": 9, "files": files, **extra}))


@contextmanager
def _killed_at(monkeypatch: pytest.MonkeyPatch, call: int) -> Iterator[list[int]]:
    """``os.replace`` raises KeyboardInterrupt on its ``call``-th use, before renaming: a kill between two steps."""
    real, calls = os.replace, [0]

    def replace(src, dst, **where) -> None:
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        real(src, dst, **where)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        yield calls


@pytest.mark.parametrize("with_commit_keys", [False, True])
@pytest.mark.parametrize("name", ["../../victim.txt", "lnk/victim.txt"])
def test_a1_a_crafted_pending_manifest_cannot_write_outside_the_checkpoints(tmp_path, name, with_commit_keys):
    checkpoints = tmp_path / "run" / "checkpoints"
    save_checkpoint(checkpoints, _model(1), TINY, _state(1), best=False)
    committed = (checkpoints / "last.json").read_text()
    outside = tmp_path / "outside"
    outside.mkdir()
    (checkpoints / "lnk").symlink_to(outside, target_is_directory=True)
    victim = tmp_path / "victim.txt" if name.startswith("..") else outside / "victim.txt"
    if name.startswith("lnk"):
        victim.write_text("original\n")
    staged = checkpoints / f".{name}.staged"  # checkpoints/.../../victim.txt.staged or checkpoints/.lnk/...
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text("import os  # a .pth line that would run at the next Python start\n")
    extra = {"commit": [name], "rotate": True} if with_commit_keys else {}
    _write_pending(checkpoints, {name: _sha(staged)}, **extra)

    with pytest.raises(CheckpointError, match=r"victim\.txt.* is not a checkpoint file name.*tampered with"):
        verify(checkpoints)
    with pytest.raises(CheckpointError, match="tampered with or is damaged"):
        restore_checkpoint(checkpoints, create_model(TINY))
    if name.startswith("lnk"):
        assert victim.read_text() == "original\n"
    else:
        assert not victim.exists()
    assert sorted(p.name for p in outside.iterdir()) == (["victim.txt"] if name.startswith("lnk") else [])
    assert staged.exists() and (checkpoints / "last.json").read_text() == committed  # nothing was moved


def test_a_staged_file_or_a_target_that_is_a_link_is_refused(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(checkpoints, _model(1), TINY, _state(1), best=False)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not a checkpoint")
    staged = checkpoints / ".last.safetensors.staged"
    staged.symlink_to(outside)
    _write_pending(checkpoints, {"last.safetensors": _sha(outside)}, commit=["last.safetensors"])
    with pytest.raises(CheckpointError, match=r"\.last\.safetensors\.staged' is a link.*tampered with"):
        verify(checkpoints)
    assert not (checkpoints / "last.safetensors").is_symlink()
    assert json.loads((checkpoints / "last.json").read_text())["step"] == 1

    staged.unlink()
    staged.write_bytes(b"new weights")
    _write_pending(checkpoints, {"last.safetensors": _sha(staged)}, commit=["last.safetensors"])
    (checkpoints / "last.safetensors").unlink()
    (checkpoints / "last.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"last\.safetensors' is a link.*tampered with"):
        verify(checkpoints)
    assert outside.read_bytes() == b"not a checkpoint" and staged.read_bytes() == b"new weights"


def test_a_save_never_writes_through_a_link_planted_under_a_staged_name(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".last.safetensors.staged").symlink_to(outside)
    save_checkpoint(tmp_path / "ckpt", _model(1), TINY, _state(1), best=False)
    assert outside.read_bytes() == b"keep me" and verify(tmp_path / "ckpt")["step"] == 1


def test_an_incomplete_pending_manifest_is_discarded_and_stale_staged_files_go(tmp_path):
    _two_generations(tmp_path)
    (tmp_path / ".last.safetensors.staged").write_bytes(b"half a file")
    (tmp_path / ".step-4.safetensors.staged").write_bytes(b"a snapshot killed half way")
    (tmp_path / ".best.safetensors.staged").symlink_to(tmp_path / "last.json")  # unlisted: removed, not followed
    whole = hashlib.sha256(b"the whole file").hexdigest()
    _write_pending(tmp_path, {"last.safetensors": whole}, commit=["last.safetensors"], rotate=True)
    manifest = verify(tmp_path)
    assert manifest["step"] == 2 and manifest["generation"] == "last"
    assert not (tmp_path / PENDING).exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".staged")]
    assert json.loads((tmp_path / "previous.json").read_text())["step"] == 1 and (tmp_path / "last.json").is_file()


def _unloadable_state(directory: Path) -> None:
    """A state file whose hash is recorded but whose format is not ours: it passes sha256 and fails to load."""
    torch.save({"format": "something-else"}, directory / "last.state.pt")
    manifest = json.loads((directory / "last.json").read_text())
    manifest["files"]["last.state.pt"] = _sha(directory / "last.state.pt")
    (directory / "last.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: _flip(d / "last.safetensors"), "last (step 2) is corrupt (last.safetensors has sha256"),
        (lambda d: (d / "last.json").unlink(), "last is missing (last.json does not exist)"),
        (lambda d: (d / "last.state.pt").write_bytes(b"junk"), "last (step 2) is corrupt (last.state.pt has sha256"),
        (_unloadable_state, "last (step 2) is unusable (last.state.pt has format 'something-else'"),
    ],
    ids=["flipped-weights", "no-manifest", "junk-state", "unloadable-state"],
)
def test_a_damaged_last_generation_falls_back_to_the_previous_one(tmp_path, damage, problem):
    models = _two_generations(tmp_path)
    damage(tmp_path)
    model = create_model(TINY)
    restored = restore_checkpoint(tmp_path, model)
    assert restored.generation == "previous" and restored.state["step"] == 1 and _same_weights(model, models[0])
    assert restored.warning.startswith(f"checkpoint {problem}")
    assert restored.warning.endswith("; resuming from the previous one (step 1)") and "\n" not in restored.warning
    # the next save replaces a damaged last and keeps the good previous generation (a last that matches its
    # hashes but does not load is not detected at save time: it becomes previous)
    save_checkpoint(tmp_path, model, TINY, _state(3), best=False)
    kept = 2 if damage is _unloadable_state else 1
    assert verify(tmp_path)["step"] == 3 and json.loads((tmp_path / "previous.json").read_text())["step"] == kept


def test_resuming_from_a_corrupt_last_continues_like_an_uninterrupted_run(tmp_path, capsys):
    bundle = tiny_bundle()
    train(tiny_config(tmp_path / "whole", epochs=3), data=bundle)
    run = tmp_path / "parts"
    train(tiny_config(run, epochs=3, max_steps=12), data=bundle)  # checkpoints at steps 6 and 12
    assert json.loads((run / "checkpoints/previous.json").read_text())["step"] == 6
    _flip(run / "checkpoints/last.safetensors")
    capsys.readouterr()
    summary = train(resume_config(run, {"max_steps": None}), data=bundle, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("resnets train: warning: checkpoint last (step 12) is corrupt (last.safetensors")
    assert warnings[0].endswith("; resuming from the previous one (step 6)")
    assert summary["steps"] == 18
    whole = load_file(str(tmp_path / "whole/checkpoints/last.safetensors"))
    parts = load_file(str(run / "checkpoints/last.safetensors"))
    assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole)
    assert (run / "steps.csv").read_text() == (tmp_path / "whole/steps.csv").read_text()


def test_both_generations_bad_is_one_error_and_exit_status_2(run_dir, capsys):
    checkpoints = run_dir / "checkpoints"
    for suffix in ("safetensors", "state.pt", "json"):  # a consistent previous generation: a copy of last
        shutil.copy(checkpoints / f"last.{suffix}", checkpoints / f"previous.{suffix}")
    assert verify(checkpoints)["generation"] == "last"
    _flip(checkpoints / "last.safetensors")
    _flip(checkpoints / "previous.state.pt")
    expected = (
        r"no usable checkpoint in .*: last \(step 2\) is corrupt \(last\.safetensors has sha256 .*\); "
        r"previous \(step 2\) is corrupt \(previous\.state\.pt has sha256 .*\); restore the files"
    )
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(checkpoints, create_model(TINY))  # refused before any weights are read
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("resnets train: error: no usable checkpoint in") and "previous (step 2) is corrupt" in err


def test_the_commit_of_a_save_is_eight_renames(tmp_path, monkeypatch):
    _two_generations(tmp_path)
    with _killed_at(monkeypatch, 0) as calls:  # never kills: counts
        save_checkpoint(tmp_path, _model(3), TINY, _state(3), best=True)
    assert calls[0] == 8  # the pending manifest, 3 into previous.*, 3 staged files, last.json


@pytest.mark.parametrize("kill_at", range(1, 9))
def test_a_kill_between_any_two_commit_steps_leaves_a_consistent_generation(tmp_path, monkeypatch, kill_at):
    base = tmp_path / "base"
    models = [*_two_generations(base), _model(3)]
    best_before = _sha(base / "best.safetensors")
    for recovery_kill in (None, *range(1, 8)):  # and a second kill while verify finishes the commit
        directory = tmp_path / f"after-{recovery_kill}"
        shutil.copytree(base, directory)
        with _killed_at(monkeypatch, kill_at), pytest.raises(KeyboardInterrupt):
            save_checkpoint(directory, models[2], TINY, _state(3), best=True)
        if recovery_kill is not None:
            with _killed_at(monkeypatch, recovery_kill):
                try:
                    verify(directory)
                except KeyboardInterrupt:
                    pass
        step = 2 if kill_at == 1 else 3  # once the pending manifest exists, the new checkpoint wins
        manifest = verify(directory)
        assert manifest["generation"] == "last" and manifest["step"] == step
        for generation, generation_step in (("last", step), ("previous", step - 1)):
            recorded = json.loads((directory / f"{generation}.json").read_text())
            assert recorded["step"] == generation_step
            for name in ("last.safetensors", "last.state.pt"):
                assert _sha(directory / name.replace("last", generation)) == recorded["files"][name]
        assert _sha(directory / "best.safetensors") == manifest["files"]["best.safetensors"]
        assert (_sha(directory / "best.safetensors") == best_before) == (step == 2)
        assert not (directory / PENDING).exists() and not list(directory.glob(".*.staged"))
        model = create_model(TINY)
        assert load_checkpoint(directory, model)["step"] == step and _same_weights(model, models[step - 1])


class _DiskFull:
    """Pickling it fails the way a full disk does, after the weights were already staged."""

    def __reduce__(self):
        raise OSError(28, "No space left on device")


def test_a_save_that_fails_while_writing_leaves_no_staged_file(tmp_path):
    _two_generations(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, _model(3), TINY, {**_state(3), "extra": _DiskFull()}, best=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".staged", ".pending", ".tmp"))]
    assert verify(tmp_path)["step"] == 2
