"""The run directory: a run records its configuration, code version, machine, metrics and pictures.

Its layout is a contract read by resume, ``resnets eval/predict/export`` and the instruments::

    config.json      the run record (resnets.runs.record): model and options, data and how it is fed,
                     precision, evaluation batch, checkpoint selection, recipe, the full train config
    env.json         package version, git commit, python/torch versions, platform, CPU, host, start time
    metrics.jsonl    one JSON object per epoch (METRIC_COLUMNS; errors in percent)
    metrics.csv      the same rows as CSV
    steps.csv        one row per optimiser step (STEP_COLUMNS): the learning rate, the batch's training loss
                     and error (%), as the step saw them; written with each checkpoint
    summary.json     the figures of the checkpoint eval reads (checkpoint, checkpoint_epoch, test_accuracy,
                     test_error in percent), epochs, steps, wall_time_s; with a validation split that checkpoint
                     is the validation-selected one (never a test-selected figure), and "last" holds the last
                     epoch's figures (resnets.train.summary)
    curves.png       train/test/val error (%) per epoch, the smoothed per-step loss, and the learning rate
    checkpoints/     see resnets.runs.checkpoint
    .lock            held (flock) by the process training the run; names it (resnets.runs.lock)
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import resnets
from resnets.errors import ConfigError, RunDirError, first_line
from resnets.io import guard
from resnets.io.atomic import atomic_write_text, finite, json_text
from resnets.io.schema import read_json, read_text
from resnets.runs.lock import LOCK_FILE, RunLock, remove_unused

#: Columns of metrics.csv, in order; val_* only when the run has a validation split.
METRIC_COLUMNS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "images_per_s",
    "epoch_time_s",
    "wall_time_s",
]
#: Where runs without --out go, relative to the working directory.
RUNS = Path("runs")
VAL_COLUMNS = ["val_loss", "val_error"]
#: Columns of steps.csv: the step's number (1-based), learning rate, batch loss and batch top-1 error (%).
STEP_COLUMNS = ["step", "lr", "loss", "error"]


class RunDir:
    """Paths and writers of one run directory; every write goes through the write guard (resnets.io.guard), which
    lets only the holder of the run's lock write these files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def create(self) -> None:
        """Make ``checkpoints/`` (never through a link) and drop the temporary files of writes a kill cut short."""
        guard.make_folder(self.checkpoints)
        with guard.folder(self.path) as folder:
            for stale in self.path.glob(".*.tmp"):
                folder.unlink(stale.name)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.path / name, json_text(data))

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name, name)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from all rows (small files; a rewrite keeps them consistent)."""
        atomic_write_text(self.path / "metrics.jsonl", "".join(json_text(r, indent=None) for r in rows))
        columns = METRIC_COLUMNS + (VAL_COLUMNS if any("val_error" in r for r in rows) else [])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(finite(r) for r in rows)
        atomic_write_text(self.path / "metrics.csv", buffer.getvalue())

    def write_steps(self, rows: list[tuple[int, float, float, float]]) -> None:
        """Rewrite steps.csv from every step's (step, lr, loss, error %) row."""
        lines = [",".join(STEP_COLUMNS)] + [f"{step},{lr!r},{loss!r},{error!r}" for step, lr, loss, error in rows]
        atomic_write_text(self.path / "steps.csv", "\n".join(lines) + "\n")

    def read_steps(self) -> list[dict[str, float]]:
        """The rows of steps.csv (empty for a run that has none); ``step`` is an int, the rest floats."""
        path = self.path / "steps.csv"
        if not path.exists():
            return []
        try:
            rows = list(csv.DictReader(io.StringIO(read_text(path, "steps file"))))
            return [{"step": int(r["step"]), **{k: float(r[k]) for k in STEP_COLUMNS[1:]}} for r in rows]
        except (ConfigError, csv.Error, KeyError, TypeError, ValueError) as error:
            raise _damaged(path, error) from None

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (empty for a run that has none)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        try:
            rows = [json.loads(line) for line in read_text(path, "metrics file").splitlines() if line.strip()]
        except (ConfigError, ValueError, RecursionError) as error:
            raise _damaged(path, error) from None
        if not all(isinstance(row, dict) and isinstance(row.get("step"), int) for row in rows):
            raise _damaged(path, "a row is not an object with an integer step")
        return rows


def _damaged(path: Path, error: object) -> RunDirError:
    """Every write of these files is atomic, so a bad one was changed by hand or by a failing disk."""
    return RunDirError(
        f"{str(path)!r} is damaged ({first_line(error)}); restore "
        f"it, or move it away to resume without the rows it held"
    )


def git_commit() -> str | None:
    """The commit of the source tree the package runs from, or None outside a git checkout."""
    source = Path(resnets.__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the run: code version, software and machine."""
    env: dict[str, Any] = {
        "resnets_version": resnets.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def default_run_path(model: str, data: str) -> Path:
    """runs/<model>-<data>-<timestamp>-<suffix>, with the data's last path component when it is a path.

    The random suffix tells apart runs started in the same second; :func:`create_default_run_dir` makes the
    directory exclusively, so even a repeated suffix never puts two runs in one directory.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    data_name = Path(data.rstrip("/")).name.replace(".tar.gz", "").replace(".", "_") or "data"
    return RUNS / f"{model}-{data_name}-{stamp}-{_run_suffix()}"


def _run_suffix() -> str:
    return secrets.token_hex(2)  # 65,536 names per second; a collision only costs a retry


def create_default_run_dir(model: str, data: str, attempts: int = 32) -> Path:
    """A new, empty default run directory, made (through the write guard) by a ``mkdir`` that fails if it exists:
    two processes never share one."""
    try:
        guard.make_folder(RUNS)
    except guard.WriteFailed as error:
        raise RunDirError(f"cannot create {str(RUNS)!r} for the run ({error.strerror}); give --out") from None
    for _ in range(attempts):
        path = default_run_path(model, data)
        try:
            guard.make_new_folder(path)
        except FileExistsError:
            continue
        except OSError as error:
            raise RunDirError(f"cannot create run directory {str(path)!r} ({error.strerror}); give --out") from None
        return path
    raise RunDirError(f"found no free run directory name under {str(RUNS)!r} in {attempts} tries; give --out")


def run_directory_of(path: str | Path) -> Path | None:
    """The run directory that ``path`` is or lies in at any depth (a checkpoint, an export, a report), if any: the
    write guard's answer, so a damaged record still marks its run."""
    return guard.run_folder_of(path)


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a run record written by ``resnets train`` (and so may be written again by it)."""
    from resnets.runs.record import read_record

    try:
        read_record(path)
    except (ConfigError, OSError):
        return False
    return True


def prepare_out_dir(path: str | Path) -> None:
    """Make ``path`` ready to receive a run, refusing what would overwrite the user's own files.

    An existing ``path`` must be a folder that is empty or a run directory of ours; a file, someone else's
    folder (its config.json, summary.json or metrics.csv would be overwritten) or an unwritable place is a
    RunDirError on one line. Nothing is written when it refuses.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {str(path)!r} is a file, not a folder; give a new or empty folder for the run")
    try:
        if path.is_dir():
            entries = sorted(name for name in os.listdir(path) if name != LOCK_FILE)
            if entries and not is_run_dir(path):
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise RunDirError(
                    f"--out {str(path)!r} is a folder that is not a run directory (it holds {shown} but no run "
                    f"record); give a new or empty folder, so that none of its files is overwritten"
                )
        guard.make_folder(path)  # never through a link inside a run, nor in a run's own folders
    except RunDirError:
        raise
    except OSError as error:
        raise RunDirError(
            f"cannot create run directory {str(path)!r} ({error.strerror}); give a writable --out"
        ) from None


def claim_run_dir(out: str | Path | None, model: str, data: str) -> tuple[RunDir, RunLock]:
    """The run directory of a training session, made ready (``out``, or a new default one) and locked.

    A second writer (the same --out twice, or --resume of a run still training) is refused with the holder's pid.
    The lock remembers the folders made here, so that :meth:`RunLock.abandon` removes them when the session fails
    before its run exists; a refused lock removes them at once.
    """
    if out:
        path = Path(out)
        made = next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
        prepare_out_dir(path)
    else:
        path = made = create_default_run_dir(model, data)
    try:
        lock = RunLock.acquire(path)
    except BaseException:
        if made is not None:
            remove_unused(path, made)
        raise
    lock.made = made
    return RunDir(path), lock
