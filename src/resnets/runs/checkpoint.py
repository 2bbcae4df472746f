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

A run directory can come from someone else, so a manifest is not trusted: only the names in
:data:`CHECKPOINT_FILES` are ever written, and links, folders or devices where a checkpoint file should be
are refused rather than followed.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from resnets.errors import CheckpointError
from resnets.io.atomic import atomic_write_text, fsync_dir, fsync_file, plain_mode, sha256_file

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
    names = SAVED_FILES if best else RESUME_FILES
    staged = {name: _path(directory, f".{name}.staged") for name in names}
    try:  # until the pending manifest exists, the staged files are debris: a failure removes them
        for path in staged.values():  # a link planted under a staged name must not be written through
            path.unlink(missing_ok=True)
        save_file(weights, str(staged["last.safetensors"]), metadata=metadata)
        torch.save({**state, "format": STATE_FORMAT}, staged["last.state.pt"])
        if best:
            save_file(weights, str(staged["best.safetensors"]), metadata=metadata)
        hashes = {}
        for name, path in staged.items():
            plain_mode(path)  # safetensors writes 0600; a run directory is for sharing, as the other files
            fsync_file(path)
            hashes[name] = sha256_file(path)
        committed = _json_or_empty(directory / MANIFEST).get("files")
        if not best and isinstance(committed, dict) and isinstance(committed.get("best.safetensors"), str):
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
        }
        atomic_write_text(directory / PENDING, json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    _commit(directory)


def _commit(directory: Path) -> None:
    """Carry out (or finish) the renames of ``last.json.pending``; see the module docstring for the order."""
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
            os.replace(_path(directory, source), _path(directory, target))
    fsync_dir(directory)
    os.replace(_path(directory, PENDING), _path(directory, MANIFEST))
    fsync_dir(directory)


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
    pending = _json_or_empty(directory / PENDING)
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


def _json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a committed checkpoint of either generation (damaged or not): a new run
    must not start over it, and ``--auto-resume`` continues it."""
    return any((Path(directory) / name).is_file() for name in (MANIFEST, PREVIOUS))


def committed_step(directory: str | Path) -> int | None:
    """The step of the newest readable committed generation; None when there is none (for messages only)."""
    for name in (MANIFEST, PREVIOUS):
        step = _json_or_empty(Path(directory) / name).get("step")
        if isinstance(step, int):
            return step
    return None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint manifest {str(path)!r} cannot be read ({error}); the run cannot resume"
        ) from None


def _recover(directory: Path) -> None:
    """Finish the commit a kill interrupted (or drop it when a file is not complete); remove stale staged files."""
    if _is_file(directory / PENDING):
        pending = _read_pending(directory)
        if pending is not None and all(
            _complete(directory, name, pending["files"][name]) for name in pending["commit"]
        ):
            _commit(directory)
        else:  # the kill came before the new checkpoint was complete (or it was damaged): the old one stands
            (directory / PENDING).unlink()
    for stale in directory.glob(".*.staged"):  # of failed saves and snapshots; none is listed any more
        if stale.is_symlink() or stale.is_file():
            stale.unlink()


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
        manifest = _json_or_empty(manifest_path)
        step = manifest.get("step")
        if not isinstance(manifest.get("files"), dict):
            raise _Unusable(f"unreadable ({manifest_path.name} is not a checkpoint manifest)")
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
    staged.unlink(missing_ok=True)  # never write through a link planted under this name
    save_file(weights_for_saving(model), str(staged), metadata=metadata)
    plain_mode(staged)  # safetensors writes 0600
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
