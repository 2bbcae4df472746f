"""Checkpoints of a run: weights in safetensors, the rest of the training state in a weights-only torch file.

``checkpoints/`` holds ``last.safetensors`` and, in runs with a validation split, ``best.safetensors`` (the
model's state dict chosen on that split; metadata
``{"model", "step", "format": "resnets-checkpoint-1"}``), ``last.state.pt`` (optimizer, schedule, RNG,
step and position, running metrics; read back only with ``torch.load(weights_only=True)``) and
``last.json``, the sha256 of each file, checked before resuming.

Two generations are kept: each save renames the committed ``last.*`` (when its files match ``last.json``)
to ``previous.*``, so one flipped byte in ``last.safetensors`` costs an epoch, not the run. ``best`` has one
generation (resuming does not need it).

The files of one save change together by a two-phase commit: every new file is first written complete
as ``.NAME.staged`` and a ``last.json.pending`` manifest records their hashes; then, all renames inside
``checkpoints/``: ``last.safetensors``, ``last.state.pt`` and ``last.json`` become ``previous.*`` (the
manifest last), the staged files move into place, and the pending manifest onto ``last.json``. Each rename
is safe to repeat: while a pending manifest that rotates sits beside ``last.json``, ``last.*`` still hold
the old generation. A kill at any point therefore leaves a directory that :func:`verify` rolls forward
when every staged file is complete, or back (the pending manifest is deleted) when not.

A run directory can come from someone else, so a manifest is not trusted: it is read through its schema
(:data:`MANIFEST_RULES`), only the names in :data:`CHECKPOINT_FILES` are ever written, and links, folders or
devices where a checkpoint file should be are refused rather than followed. Every file is written through the
write guard (:mod:`resnets.io.guard`), in the folder it checked, by the process that holds the run's lock.

A manifest also records the run record (``config.json``) it was saved beside, and its sha256, so that a resume
trusts only the record it wrote (:func:`committed_record`).
"""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from resnets.errors import CheckpointError, ConfigError
from resnets.io import guard
from resnets.io.atomic import json_text, sha256_bytes, sha256_file
from resnets.io.guard import RECORD_FILE
from resnets.io.schema import (
    FLAG,
    NATURAL,
    SHA256,
    Rule,
    check_object,
    each,
    mapping,
    one_of,
    parse_json,
    read_json,
    read_text,
    text,
)

FORMAT = "resnets-checkpoint-1"
STATE_FORMAT = "resnets-train-state-1"
MANIFEST = "last.json"
PREVIOUS = "previous.json"
PENDING = "last.json.pending"
RESUME_FILES = ("last.safetensors", "last.state.pt")  # what resuming needs, in each generation
SAVED_FILES = (*RESUME_FILES, "best.safetensors")  # what a save may write (staged first)
GENERATIONS = ("last", "previous")  # newest first: the order in which resuming tries them
#: Every name the commit may create, move or delete in ``checkpoints/``; a manifest naming another is refused.
CHECKPOINT_FILES = frozenset(
    {*SAVED_FILES, MANIFEST, PENDING, PREVIOUS, "previous.safetensors", "previous.state.pt"}
    | {f".{name}.staged" for name in SAVED_FILES}
)
_FILES: Rule = (
    lambda v: isinstance(v, dict) and all(isinstance(k, str) and SHA256[0](d) for k, d in v.items()),
    "an object of file names to sha256 hashes",
)
#: What a checkpoint manifest (last.json, previous.json, last.json.pending) may hold; names are checked apart.
MANIFEST_RULES: dict[str, Rule] = {
    "format": one_of((FORMAT,)),
    "model": text(),
    "step": NATURAL,
    "epoch": NATURAL,
    "batch": NATURAL,
    "files": _FILES,
    "commit": each((lambda v: isinstance(v, str), "a file name")),
    "rotate": FLAG,
    "record_sha256": SHA256,
    "record": mapping(),
}
_SNAPSHOT = re.compile(r"step-(\d{1,18})\.safetensors")


def weights_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (safetensors refuses strided, e.g. channels_last, views)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    directory: str | Path, model: nn.Module, model_name: str, state: dict[str, Any], *, best: bool
) -> None:
    """Save the last checkpoint (and the best weights when ``best``) with the two-phase commit above.

    The files are serialised in memory first, so a full disk is an OSError from the write guard (never a library's
    own exception half-way through a file), and the staged files are removed.
    """
    directory = Path(directory)
    weights = safetensors_bytes(
        weights_for_saving(model), metadata={"model": model_name, "step": str(state["step"]), "format": FORMAT}
    )
    buffer = io.BytesIO()
    torch.save({**state, "format": STATE_FORMAT}, buffer)
    names = SAVED_FILES if best else RESUME_FILES
    blobs = {"last.safetensors": weights, "last.state.pt": buffer.getvalue(), "best.safetensors": weights}
    with guard.folder(directory) as folder:
        try:  # until the pending manifest exists, the staged files are debris: a failure removes them
            hashes = {}
            for name in names:
                folder.write(_checked(directory, f".{name}.staged"), blobs[name], atomic=False)
                hashes[name] = sha256_bytes(blobs[name])
            committed = _manifest_or_empty(directory / MANIFEST).get("files", {})
            if not best and "best.safetensors" in committed:
                hashes["best.safetensors"] = committed["best.safetensors"]  # best has one generation: it stays
            manifest = {
                "format": FORMAT,
                "model": model_name,
                "step": state["step"],
                "epoch": state["epoch"],
                "batch": state["batch"],
                "files": hashes,
                "commit": list(names),  # the staged files; the other entries of "files" are carried over
                "rotate": _is_consistent(directory, "last"),  # a damaged last must not push out a good previous
                **_record_beside(directory),
            }
            folder.write(PENDING, json_text(manifest).encode())
        except BaseException:
            for name in names:
                folder.unlink(f".{name}.staged")
            raise
        _commit(folder)


def _record_beside(directory: Path) -> dict[str, Any]:
    """The run record beside ``checkpoints/`` and its sha256, for the manifest (none outside a run directory)."""
    path = directory.parent / RECORD_FILE
    if not path.is_file():
        return {}
    data = read_text(path, "run record").encode("utf-8")
    return {"record_sha256": sha256_bytes(data), "record": parse_json(data.decode("utf-8"), str(path))}


def _commit(folder: guard.Folder) -> None:
    """Carry out (or finish) the renames of ``last.json.pending``; see the module docstring for the order."""
    directory = folder.path
    pending = _read_pending(directory)
    if pending is None:
        raise CheckpointError(f"{str(directory / PENDING)!r} cannot be read; the commit cannot be finished")
    moves = []
    if pending["rotate"] and _is_file(directory / MANIFEST):  # the old generation has not been moved yet
        moves += [(name, "previous" + name.removeprefix("last")) for name in (*RESUME_FILES, MANIFEST)]
    moves += [(f".{name}.staged", name) for name in pending["commit"]]
    for source, target in moves:  # check every path before the first rename, so a refusal changes nothing
        _is_file(_path(directory, source))
        _is_file(_path(directory, target))
    for source, target in moves:
        if _is_file(_path(directory, source)):
            folder.replace(source, target)
    folder.sync()
    folder.replace(PENDING, MANIFEST)
    folder.sync()


def _checked(directory: Path, name: str) -> str:
    """A checkpoint file name, refused (as tampering) when it is not one of :data:`CHECKPOINT_FILES`."""
    _path(directory, name)
    return name


def _path(directory: Path, name: str) -> Path:
    """``directory / name`` for a checkpoint file name; any other name (a path, ``..``) means tampering."""
    if name not in CHECKPOINT_FILES:
        raise _refused(directory, name)
    return directory / name


def _refused(directory: Path, name: object) -> CheckpointError:
    return CheckpointError(
        f"{name!r} in {str(directory)!r} is not a checkpoint file name (expected one of "
        f"{', '.join(SAVED_FILES)}): the run directory was tampered with or is damaged; do not resume it"
    )


def _is_file(path: Path) -> bool:
    """Whether ``path`` exists as a regular file; a link, folder or device there is refused, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            f"{str(path)!r} is a link, folder or device, not a regular file: the run directory was tampered "
            "with or is damaged; do not resume it"
        )
    return True


def _read_pending(directory: Path) -> dict[str, Any] | None:
    """The pending manifest with its names checked; None when it is unreadable (then it is discarded)."""
    pending = _manifest_or_empty(directory / PENDING)
    files = pending.get("files")
    commit = pending.get("commit", list(files) if isinstance(files, dict) else None)  # older saves: all files
    if not isinstance(files, dict) or not isinstance(commit, list):
        return None
    for name in [*files, *commit]:
        if name not in SAVED_FILES:
            raise _refused(directory, name)
    if not set(commit) <= set(files):
        return None
    return {**pending, "files": files, "commit": commit, "rotate": pending.get("rotate") is True}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A checkpoint manifest checked against :data:`MANIFEST_RULES`, or one CheckpointError line saying why not."""
    try:
        return check_object(
            read_json(path, "checkpoint manifest"), MANIFEST_RULES, str(path), required=("format", "step", "files")
        )
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def _manifest_or_empty(path: Path) -> dict[str, Any]:
    """The manifest at ``path``; ``{}`` when it is missing, unreadable or breaks its schema."""
    try:
        return read_manifest(path)
    except CheckpointError:
        return {}


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a committed checkpoint of either generation (damaged or not): a new run
    must not start over it, and ``--auto-resume`` continues it."""
    return any((Path(directory) / name).is_file() for name in (MANIFEST, PREVIOUS))


def committed_step(directory: str | Path) -> int | None:
    """The step of the newest readable committed generation; None when there is none (for messages only)."""
    for name in (MANIFEST, PREVIOUS):
        step = _manifest_or_empty(Path(directory) / name).get("step")
        if step is not None:
            return step
    return None


def committed_record(directory: str | Path) -> tuple[int, str, dict[str, Any]] | None:
    """(step, sha256, record) of the run record the newest readable committed generation was saved beside.

    None when no manifest records one (a checkpoint saved outside a run directory, or by an older version).
    """
    for name in (MANIFEST, PREVIOUS):
        manifest = _manifest_or_empty(Path(directory) / name)
        if "record_sha256" in manifest and "record" in manifest:
            return manifest["step"], manifest["record_sha256"], manifest["record"]
    return None


def _recover(directory: Path) -> None:
    """Finish the commit a kill interrupted (or drop it when a file is not complete); remove stale staged
    and temporary files (of failed or killed saves and snapshots; none is listed any more)."""
    if not directory.exists():
        return
    with guard.folder(directory) as folder:
        if _is_file(directory / PENDING):
            pending = _read_pending(directory)
            if pending is not None and all(
                _complete(directory, name, pending["files"][name]) for name in pending["commit"]
            ):
                _commit(folder)
            else:  # the kill came before the new checkpoint was complete (or it was damaged): the old one stands
                folder.unlink(PENDING)
        for stale in [*directory.glob(".*.staged"), *directory.glob(".*.tmp")]:
            mode = folder.mode(stale.name)
            if mode is not None and (stat.S_ISLNK(mode) or stat.S_ISREG(mode)):
                folder.unlink(stale.name)


def _complete(directory: Path, name: str, expected: object) -> bool:
    """Whether the new ``name`` is whole: staged, or already moved into place, with the recorded sha256."""
    staged = _path(directory, f".{name}.staged")
    path = staged if _is_file(staged) else _path(directory, name)
    return _is_file(path) and sha256_file(path) == expected


class _Unusable(Exception):
    """What is wrong with one generation, as a phrase ("missing (...)", "corrupt (...)"), and its step."""

    def __init__(self, problem: str, step: object = None) -> None:
        super().__init__(problem)
        self.problem, self.step = problem, step

    def describe(self, generation: str) -> str:
        at = f" (step {self.step})" if self.step is not None else ""
        return f"{generation}{at} is {self.problem}"


def _generation_file(generation: str, name: str) -> str:
    """``last.safetensors`` of ``previous`` is ``previous.safetensors``: previous.json keeps last.json's keys."""
    return generation + name.removeprefix("last")


def _verified(directory: Path, generation: str) -> dict[str, Any]:
    """The manifest of ``generation`` once its resume files match it; otherwise :class:`_Unusable` says why."""
    manifest_path = directory / f"{generation}.json"
    try:
        if not _is_file(manifest_path):
            raise _Unusable(f"missing ({manifest_path.name} does not exist)")
        try:
            manifest = read_manifest(manifest_path)
        except CheckpointError as error:
            raise _Unusable(f"unreadable ({manifest_path.name} is not a checkpoint manifest: {error})") from None
        step = manifest.get("step")
        for name in RESUME_FILES:
            path = directory / _generation_file(generation, name)
            if not _is_file(path):
                raise _Unusable(f"missing ({path.name} does not exist)", step)
            actual, expected = sha256_file(path), str(manifest["files"].get(name))
            if actual != expected:
                raise _Unusable(
                    f"corrupt ({path.name} has sha256 {actual[:16]}... but {manifest_path.name} records "
                    f"{expected[:16]}...)",
                    step,
                )
    except CheckpointError as error:  # a link or folder where a file should be
        raise _Unusable(f"unusable ({error})") from None
    return manifest


def _is_consistent(directory: Path, generation: str) -> bool:
    try:
        _verified(directory, generation)
    except _Unusable:
        return False
    return True


def _no_checkpoint(directory: Path, problems: dict[str, _Unusable]) -> CheckpointError:
    if all(bad.problem.startswith("missing") and bad.step is None for bad in problems.values()):
        return CheckpointError(f"no checkpoint in {str(directory)!r} ({MANIFEST} is missing); the run cannot resume")
    reasons = "; ".join(bad.describe(generation) for generation, bad in problems.items())
    return CheckpointError(
        f"no usable checkpoint in {str(directory)!r}: {reasons}; restore the files or start a new run"
    )


def verify(directory: str | Path) -> dict[str, Any]:
    """Finish or undo an interrupted commit, then return the manifest of the newest consistent generation.

    ``manifest["generation"]`` says which one (``"last"`` or ``"previous"``); neither: a CheckpointError.
    """
    directory = Path(directory)
    _recover(directory)
    problems: dict[str, _Unusable] = {}
    for generation in GENERATIONS:
        try:
            return {**_verified(directory, generation), "generation": generation}
        except _Unusable as bad:
            problems[generation] = bad
    raise _no_checkpoint(directory, problems)


@dataclass(frozen=True)
class Restored:
    """A loaded checkpoint: its training state, which generation it came from, and why not ``last``."""

    state: dict[str, Any]
    generation: str
    warning: str | None  # e.g. "checkpoint last (step 120) is corrupt (...); resuming from the previous one (step 60)"


def restore_checkpoint(directory: str | Path, model: nn.Module) -> Restored:
    """Verify and load the newest usable generation into ``model``: ``last``, else ``previous``.

    A generation is unusable when a file is missing, does not match its manifest, cannot be read or does not
    load; falling back is reported in ``warning``, for the caller to print. Both unusable: a CheckpointError.
    """
    directory = Path(directory)
    _recover(directory)
    problems: dict[str, _Unusable] = {}
    for generation in GENERATIONS:
        try:
            manifest = _verified(directory, generation)
            state = _load_generation(directory, generation, model, manifest.get("step"))
        except _Unusable as bad:
            problems[generation] = bad
            continue
        warning = None
        if problems:
            warning = (
                f"checkpoint {problems['last'].describe('last')}; resuming from the previous one "
                f"(step {manifest.get('step')})"
            )
        return Restored(state, generation, warning)
    raise _no_checkpoint(directory, problems)


def load_checkpoint(directory: str | Path, model: nn.Module) -> dict[str, Any]:
    """:func:`restore_checkpoint`'s training state, for callers that need not say where it came from."""
    return restore_checkpoint(directory, model).state


def _load_generation(directory: Path, generation: str, model: nn.Module, step: object) -> dict[str, Any]:
    weights_name = _generation_file(generation, "last.safetensors")
    state_name = _generation_file(generation, "last.state.pt")
    try:
        weights = load_file(str(directory / weights_name))
    except Exception as error:  # noqa: BLE001  (a file safetensors cannot parse is unusable, whatever the error)
        raise _Unusable(f"unreadable ({weights_name}: {_one_line(error)})", step) from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise _Unusable(f"unusable ({weights_name} does not fit the model: {_one_line(error)})", step) from None
    try:
        state = torch.load(directory / state_name, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unpickling failure means an unusable file)
        raise _Unusable(f"unreadable ({state_name} cannot be read safely: {_one_line(error)})", step) from None
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != STATE_FORMAT:
        raise _Unusable(f"unusable ({state_name} has format {found!r}, expected {STATE_FORMAT!r})", step)
    return state


def _one_line(error: BaseException) -> str:
    """PyTorch's messages span lines; a CLI error is one line."""
    return " ".join(str(error).split())


def check_file(directory: str | Path, name: str) -> None:
    """For readers: ``name`` must match the sha256 that the committed manifest records for it.

    A flipped byte in a weight file would otherwise give NaN predictions with exit status 0. A commit in
    progress (a pending manifest) is accepted when the file matches it; nothing is written here.
    """
    directory = Path(directory)
    if _SNAPSHOT.fullmatch(name):
        recorded = {snapshot_steps(directory).get(int(_SNAPSHOT.fullmatch(name).group(1)))}
    elif not (directory / MANIFEST).exists():
        return  # a checkpoint folder made by hand (no manifest): nothing to check against
    else:
        recorded = {read_manifest(directory / MANIFEST)["files"].get(name)}
        if (directory / PENDING).exists():
            recorded.add(read_manifest(directory / PENDING)["files"].get(name))
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
    metadata = {"model": model_name, "step": str(step), "format": FORMAT}
    data = safetensors_bytes(weights_for_saving(model), metadata=metadata)
    with guard.folder(directory) as folder:
        folder.write(snapshot_name(step), data)
        index = snapshot_steps(directory)
        index[step] = sha256_bytes(data)
        files = {snapshot_name(k): v for k, v in sorted(index.items())}
        folder.write(SNAPSHOTS, json_text({"format": FORMAT, "files": files}).encode())


#: What snapshots.json may hold.
SNAPSHOT_RULES: dict[str, Rule] = {
    "format": one_of((FORMAT,)),
    "files": (
        lambda v: _FILES[0](v) and all(_SNAPSHOT.fullmatch(k) for k in v),
        "an object of step-N.safetensors names to sha256 hashes",
    ),
}


def snapshot_steps(directory: str | Path) -> dict[int, str]:
    """Step -> sha256 of the weight snapshots a run kept (empty when it kept none)."""
    path = Path(directory) / SNAPSHOTS
    if not path.exists():
        return {}
    try:
        files = check_object(read_json(path, "snapshot list"), SNAPSHOT_RULES, str(path), required=("files",))["files"]
    except ConfigError as error:
        raise CheckpointError(f"{error}; restore it, or remove it to forget the snapshots") from None
    return {int(_SNAPSHOT.fullmatch(name).group(1)): digest for name, digest in files.items()}
