"""No run loses another's work: unique default run directories, one writer per run directory, no writing
into a folder that is not a run, and no eval report written through a symlink out of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import datetime, tzinfo
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.runs import directory
from resnets.runs.directory import create_default_run_dir, default_run_path
from resnets.runs.lock import LOCK_FILE, RunLock

from .conftest import write_image_tree


class _FrozenClock(datetime):
    """datetime whose now() is always the same second, as for two runs started together."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:
        return datetime(2026, 11, 23, 22, 10, 5, tzinfo=tz)


def _contents(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder): what "nothing was written" compares."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _train_args(data: Path, out: Path | str) -> list[str]:
    return ["train", "--model", "resnet20", "--data", str(data), "--out", str(out), "--max-steps", "1"] + [
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]


def test_default_run_paths_made_in_the_same_second_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(directory, "datetime", _FrozenClock)
    first, second = default_run_path("resnet20", "fashion-mnist"), default_run_path("resnet20", "fashion-mnist")
    assert first != second
    assert first.parent == second.parent == Path("runs")
    assert first.name.startswith("resnet20-fashion-mnist-20261123-221005-")
    made = [create_default_run_dir("resnet20", "fashion-mnist") for _ in range(2)]
    assert made[0] != made[1] and all(path.is_dir() for path in made)


def test_a_taken_default_name_is_retried_with_another_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(directory, "datetime", _FrozenClock)
    suffixes = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(directory, "_run_suffix", lambda: next(suffixes))
    first = create_default_run_dir("m", "d")
    second = create_default_run_dir("m", "d")  # "aaaa" exists: the exclusive mkdir fails and it tries again
    assert (first.name, second.name) == ("m-d-20261123-221005-aaaa", "m-d-20261123-221005-bbbb")


def test_two_trainings_started_in_the_same_second_keep_their_own_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnets.train import train
    from tests.train.conftest import tiny_bundle, tiny_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(directory, "datetime", _FrozenClock)
    summaries = [train(replace(tiny_config(None, max_steps=1), out=None), data=tiny_bundle()) for _ in range(2)]
    runs = [Path(s["run_dir"]) for s in summaries]
    assert runs[0] != runs[1] and sorted(Path("runs").iterdir()) == sorted(runs)
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["run_dir"] == str(run)
        assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 1


def _hold_lock_in_child(run: Path) -> subprocess.Popen:
    """A second process that holds ``run``'s lock until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from resnets.runs.lock import RunLock
        with RunLock.acquire({str(run)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_a_second_writer_is_refused_naming_the_holder_and_writes_nothing(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    data = Path(json.loads((run_dir / "config.json").read_text())["data"]["spec"])
    child = _hold_lock_in_child(run_dir)
    try:
        before = _contents(run_dir)
        assert main(_train_args(data, run_dir)) == 2
        line = _one_error_line(capsys)
        assert f"is in use by pid {child.pid} on host " in line and "choose another --out" in line
        assert "-c" in line  # the holder's command line
        assert _contents(run_dir) == before
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    assert (run_dir / LOCK_FILE).read_bytes() == b""  # released: the description goes with the lock
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 0  # free again
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3


def test_resume_of_a_run_still_training_is_refused(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with RunLock.acquire(run_dir):
        before = _contents(run_dir)
        assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 2
        assert f"is in use by pid {os.getpid()}" in _one_error_line(capsys)
        assert _contents(run_dir) == before
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 0


def test_out_on_a_folder_that_is_not_a_run_leaves_it_untouched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_image_tree(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"lr": 0.1, "note": "my own experiment"}\n')
    (mine / "summary.json").write_text('{"accuracy": 99.5}\n')
    (mine / "metrics.csv").write_text("epoch,acc\n1,99.5\n")
    before = _contents(mine)
    assert main(_train_args(data, mine)) == 2
    line = _one_error_line(capsys)
    assert "is a folder that is not a run directory" in line and "config.json" in line
    assert _contents(mine) == before


@pytest.mark.parametrize("where", ["file", "proc"])
def test_out_on_a_file_or_an_unwritable_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, where: str
) -> None:
    data = write_image_tree(tmp_path / "data")
    out = tmp_path / "notes.txt" if where == "file" else Path("/proc/resnets-run-safety-test")
    if where == "file":
        out.write_text("keep me\n")
    assert main(_train_args(data, out)) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and ("is a file" in line if where == "file" else "cannot create run directory" in line)
    assert where != "file" or out.read_text() == "keep me\n"


@pytest.mark.parametrize("link", ["folder", "file"])
def test_eval_refuses_a_symlinked_report_and_writes_nothing_outside(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, link: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.json").write_text("keep me\n")
    if link == "folder":
        (run_dir / "eval-test").symlink_to(outside, target_is_directory=True)
    else:
        (run_dir / "eval-test").mkdir()
        (run_dir / "eval-test" / "eval.json").symlink_to(outside / "victim.json")
    before = _contents(outside)
    assert main(["eval", str(run_dir)]) == 2
    assert "symlink" in _one_error_line(capsys)
    assert _contents(outside) == before


def test_eval_on_a_full_disk_is_one_line_and_leaves_no_partial_report(run_dir, capsys, monkeypatch) -> None:
    import errno

    from resnets.io import guard

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(guard.os, "replace", full)
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert not (run_dir / "eval-test").exists() or not list((run_dir / "eval-test").iterdir())


@pytest.mark.parametrize("out", ["checkpoints/new", "tensorboard", "linked/new"])
def test_a_new_run_inside_a_runs_own_folders_or_through_a_link_in_it_is_refused_and_makes_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    data = Path(json.loads((run_dir / "config.json").read_text())["data"]["spec"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "linked").symlink_to(outside, target_is_directory=True)
    before = _contents(run_dir)

    def no_lock(path: object) -> None:
        raise AssertionError("refused while the folder is made, before a lock is taken")

    monkeypatch.setattr(RunLock, "acquire", no_lock)
    assert main(_train_args(data, run_dir / out)) == 2
    line = _one_error_line(capsys)
    assert ("symlink inside the run directory" if out.startswith("linked") else "only its training writes") in line
    assert _contents(run_dir) == before and list(outside.iterdir()) == []


def test_the_lock_is_never_taken_through_a_link(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (run_dir / LOCK_FILE).unlink()
    (run_dir / LOCK_FILE).symlink_to(victim)
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"{str(run_dir / LOCK_FILE)!r} is not a regular file (a symlink)" in line
    assert victim.read_text() == "keep me\n" and (run_dir / LOCK_FILE).is_symlink()
