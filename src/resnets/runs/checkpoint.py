"""Checkpoints of a run: weights in safetensors, the rest of the training state in a weights-only torch file.

``checkpoints/`` holds ``last.safetensors`` and, in runs with a validation split, ``best.safetensors`` (the
model's state dict chosen on that split; metadata
``{"model", "step", "format": "resnets-checkpoint-1"}``), ``last.state.pt`` (optimizer, schedule, RNG,
step and position, running metrics; read back only with ``torch.load(weights_only=True)``) and
``last.json``, the sha256 of each file, checked before resuming.

The files of one save change together by a two-phase commit: every new file is first written complete
under a temporary name and a ``last.json.pending`` manifest records their hashes; then each is renamed
into place, and the manifest last. A kill at any point leaves either the old checkpoint or the new one,
and ``load_state`` finishes an interrupted commit instead of mixing the two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from resnets.errors import CheckpointError
from resnets.io.atomic import atomic_write_text, fsync_dir, fsync_file, sha256_file

FORMAT = "resnets-checkpoint-1"
STATE_FORMAT = "resnets-train-state-1"
MANIFEST = "last.json"
PENDING = "last.json.pending"


def weights_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (safetensors refuses strided, e.g. channels_last, views)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    directory: str | Path, model: nn.Module, model_name: str, state: dict[str, Any], *, best: bool
) -> None:
    """Save the last checkpoint (and the best weights when ``best``) with the two-phase commit above."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = weights_for_saving(model)
    metadata = {"model": model_name, "step": str(state["step"]), "format": FORMAT}
    names = ["last.safetensors", "last.state.pt"] + (["best.safetensors"] if best else [])
    staged = {name: directory / f".{name}.staged" for name in names}
    save_file(weights, str(staged["last.safetensors"]), metadata=metadata)
    torch.save({**state, "format": STATE_FORMAT}, staged["last.state.pt"])
    if best:
        save_file(weights, str(staged["best.safetensors"]), metadata=metadata)
    hashes = _read_manifest(directory / MANIFEST).get("files", {}) if (directory / MANIFEST).exists() else {}
    for name, path in staged.items():
        fsync_file(path)
        hashes[name] = sha256_file(path)
    manifest = {
        "format": FORMAT,
        "model": model_name,
        "step": state["step"],
        "epoch": state["epoch"],
        "batch": state["batch"],
        "files": hashes,
    }
    atomic_write_text(directory / PENDING, json.dumps(manifest, indent=2) + "\n")
    _commit(directory)


def _commit(directory: Path) -> None:
    """Move staged files into place, then the pending manifest onto ``last.json``."""
    for name in _read_manifest(directory / PENDING)["files"]:
        staged = directory / f".{name}.staged"
        if staged.exists():
            os.replace(staged, directory / name)
    fsync_dir(directory)
    os.replace(directory / PENDING, directory / MANIFEST)
    fsync_dir(directory)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint manifest {str(path)!r} cannot be read ({error}); the run cannot resume"
        ) from None


def verify(directory: str | Path) -> dict[str, Any]:
    """Finish an interrupted commit, then check every file against ``last.json``; returns the manifest."""
    directory = Path(directory)
    if (directory / PENDING).exists():
        pending = _read_manifest(directory / PENDING)
        ready = all(
            (directory / f".{n}.staged").exists()
            and sha256_file(directory / f".{n}.staged") == h
            or (directory / n).exists()
            and sha256_file(directory / n) == h
            for n, h in pending["files"].items()
        )
        if ready:
            _commit(directory)
        else:  # the kill came before the new checkpoint was complete: the old one stands
            (directory / PENDING).unlink()
    if not (directory / MANIFEST).exists():
        raise CheckpointError(f"no checkpoint in {str(directory)!r} ({MANIFEST} is missing); the run cannot resume")
    manifest = _read_manifest(directory / MANIFEST)
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"checkpoint file {str(path)!r} is missing; it is listed in {MANIFEST}")
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is corrupt or was changed: sha256 {actual[:16]}... does not match "
                f"{expected[:16]}... in {MANIFEST}; restore it or start a new run"
            )
    return manifest


def load_checkpoint(directory: str | Path, model: nn.Module) -> dict[str, Any]:
    """Verify, load ``last.safetensors`` into ``model`` and return the training state of ``last.state.pt``."""
    directory = Path(directory)
    verify(directory)
    weights = load_file(str(directory / "last.safetensors"))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{directory / 'last.safetensors'} does not fit the model: {error}") from None
    try:
        state = torch.load(directory / "last.state.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unpickling failure means an unusable file)
        raise CheckpointError(f"{directory / 'last.state.pt'} cannot be read safely: {error}") from None
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{directory / 'last.state.pt'} has format {state.get('format')!r}, expected {STATE_FORMAT!r}"
        )
    return state


def check_file(directory: str | Path, name: str) -> None:
    """For readers: ``name`` must match the sha256 that the committed manifest records for it.

    A flipped byte in a weight file would otherwise give NaN predictions with exit status 0. A commit in
    progress (a pending manifest) is accepted when the file matches it; nothing is written here.
    """
    directory = Path(directory)
    if name.startswith("step-"):
        recorded = {snapshot_steps(directory).get(int(name.removeprefix("step-").removesuffix(".safetensors")))}
    elif not (directory / MANIFEST).exists():
        return  # a checkpoint folder made by hand (no manifest): nothing to check against
    else:
        recorded = {_read_manifest(directory / MANIFEST)["files"].get(name)}
    if (directory / PENDING).exists() and not name.startswith("step-"):
        recorded.add(_read_manifest(directory / PENDING)["files"].get(name))
    recorded.discard(None)
    if not recorded:
        raise CheckpointError(f"{str(directory / name)!r} is not listed in {MANIFEST}; it was not written by training")
    actual = sha256_file(directory / name)
    if actual not in recorded:
        raise CheckpointError(
            f"checkpoint file {str(directory / name)!r} is corrupt or was changed: its sha256 {actual[:16]}... is "
            f"not the one in {MANIFEST}; restore it or train again"
        )


SNAPSHOTS = "snapshots.json"


def snapshot_name(step: int) -> str:
    return f"step-{step}.safetensors"


def save_snapshot(directory: str | Path, model: nn.Module, model_name: str, step: int) -> None:
    """Keep the weights at ``step`` as ``step-N.safetensors``, its sha256 recorded in snapshots.json.

    Snapshots let instruments follow a run through training (gradients, gate activity at several steps);
    resume never reads them, so they live outside the two-phase commit of the last checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = snapshot_name(step)
    metadata = {"model": model_name, "step": str(step), "format": FORMAT}
    staged = directory / f".{name}.staged"
    save_file(weights_for_saving(model), str(staged), metadata=metadata)
    fsync_file(staged)
    digest = sha256_file(staged)
    os.replace(staged, directory / name)
    index = snapshot_steps(directory)
    index[step] = digest
    files = {snapshot_name(k): v for k, v in sorted(index.items())}
    atomic_write_text(directory / SNAPSHOTS, json.dumps({"format": FORMAT, "files": files}, indent=2) + "\n")


def snapshot_steps(directory: str | Path) -> dict[int, str]:
    """Step -> sha256 of the weight snapshots a run kept (empty when it kept none)."""
    path = Path(directory) / SNAPSHOTS
    if not path.exists():
        return {}
    files = _read_manifest(path).get("files", {})
    return {int(name.removeprefix("step-").removesuffix(".safetensors")): digest for name, digest in files.items()}
