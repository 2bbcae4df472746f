"""The write guard: a run's own files only for the holder of its lock, no link inside a run, the folder that was
checked is the folder written, and a failed write leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from resnets.errors import ResnetsError
from resnets.io import guard
from resnets.io.atomic import atomic_write, atomic_write_json, atomic_write_text, json_text
from resnets.io.guard import WriteFailed, WriteRefused


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A folder that the guard takes for a run directory: a record beside a lock and a checkpoints folder."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")
    (run / ".lock").write_bytes(b"")
    (run / "checkpoints" / "last.json").write_text("{}\n")
    return run


@pytest.mark.parametrize(
    "name", ["config.json", "summary.json", "metrics.csv", "checkpoints/last.json", "checkpoints/x"]
)
def test_a_runs_own_files_are_written_only_by_the_holder_of_its_lock(run: Path, name: str) -> None:
    with pytest.raises(WriteRefused, match="only its training writes"):
        atomic_write_text(run / name, "new")
    guard.own(run)
    try:
        atomic_write_text(run / name, "new")
    finally:
        guard.disown(run)
    assert (run / name).read_text() == "new"
    with pytest.raises(WriteRefused):
        atomic_write_text(run / name, "newer")


def test_other_files_of_a_run_may_be_written_unless_the_writer_replaces_none(run: Path) -> None:
    atomic_write_text(run / "exports" / "m.onnx", "a")
    atomic_write_text(run / "exports" / "m.onnx", "b")  # export again: replaced
    with pytest.raises(WriteRefused, match="is a file of the run directory"):
        atomic_write_text(run / "exports" / "m.onnx", "c", replace_in_run=False)  # predict --output
    atomic_write_text(run / "predictions.csv", "new file", replace_in_run=False)
    assert (run / "exports" / "m.onnx").read_text() == "b"


def test_no_link_is_followed_inside_a_run_but_the_way_to_a_run_may_be_one(run: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "exports").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WriteRefused, match="symlink inside the run directory"):
        atomic_write_text(run / "exports" / "m.onnx", "x")
    with pytest.raises(WriteRefused, match="symlink inside the run directory"):
        guard.check(run / "exports" / "deeper" / "m.onnx")
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)  # the user's link to the run: fine
    atomic_write_text(tmp_path / "alias" / "notes.txt", "x")
    (tmp_path / "into").symlink_to(run / "checkpoints", target_is_directory=True)  # seen through, to the run
    with pytest.raises(WriteRefused, match="only its training writes"):
        atomic_write_text(tmp_path / "into" / "last.json", "x")
    assert list(outside.iterdir()) == [] and (run / "notes.txt").read_text() == "x"


@pytest.mark.parametrize("kind", ["link", "folder", "fifo"])
def test_the_target_itself_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    target, victim = tmp_path / "out.json", tmp_path / "victim"
    victim.write_text("keep me")
    {"link": lambda: target.symlink_to(victim), "folder": target.mkdir, "fifo": lambda: os.mkfifo(target)}[kind]()
    with pytest.raises(WriteRefused, match="is not a regular file"):
        atomic_write_text(target, "{}")
    assert victim.read_text() == "keep me"


def test_a_folder_swapped_for_a_link_after_the_check_does_not_redirect_the_write(tmp_path: Path) -> None:
    folder, moved, elsewhere = tmp_path / "out", tmp_path / "moved", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    with guard.folder(folder) as opened:
        folder.rename(moved)  # between the walk and the write, someone swaps the folder for a link
        folder.symlink_to(elsewhere, target_is_directory=True)
        opened.write("report.json", b"{}")
    assert (moved / "report.json").read_bytes() == b"{}" and list(elsewhere.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_and_no_folder_it_made(tmp_path: Path) -> None:
    (tmp_path / "kept.txt").write_text("old")

    def half(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for path in (tmp_path / "kept.txt", tmp_path / "a" / "b" / "new.txt"):
        with pytest.raises(WriteFailed, match=r"cannot write .* No space left on device") as error:
            atomic_write(path, half)
        assert isinstance(error.value, OSError) and isinstance(error.value, ResnetsError)
        assert error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"] and (tmp_path / "kept.txt").read_text() == "old"


def test_check_refuses_what_write_would_and_creates_nothing(run: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteRefused, match="is a file, not a folder"):
        guard.check(tmp_path / "file" / "out.json")
    with pytest.raises(WriteRefused, match="only its training writes"):
        guard.check(run / "checkpoints" / "new" / "x.onnx")
    guard.check(tmp_path / "new" / "deeper" / "out.json")
    assert not (tmp_path / "new").exists()
    with pytest.raises(WriteRefused, match="not a file name"):
        guard.check(Path(""))  # --out ''
    with pytest.raises(WriteRefused, match="is not a regular file \\(a folder\\)"):
        guard.check(tmp_path)


def test_no_json_file_written_holds_nan_or_infinity(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"loss": float("nan"), "rows": [1.0, float("-inf")]})
    atomic_write_text(tmp_path / "b.json", '{"loss": NaN,\n  "x": Infinity}')  # a writer that forgot
    atomic_write_text(tmp_path / "c.jsonl", '{"a": NaN}\n{"a": 1}\n')
    atomic_write_text(tmp_path / "d.txt", "NaN stays in text")

    def refuse(token: str) -> None:
        raise AssertionError(token)

    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=refuse) == {"loss": None, "rows": [1.0, None]}
    assert json.loads((tmp_path / "b.json").read_text(), parse_constant=refuse) == {"loss": None, "x": None}
    rows = [json.loads(line, parse_constant=refuse) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert rows == [{"a": None}, {"a": 1}] and (tmp_path / "d.txt").read_text() == "NaN stays in text"
    assert json_text({"x": (1, float("inf"))}, indent=None) == '{"x": [1, null]}\n'


# Folders, the lock, new files and a writer's folder: the writes that cannot be a rename into place ---------


def test_folders_are_made_only_where_a_file_could_be_written_and_nothing_is_left(run: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "exports").symlink_to(outside, target_is_directory=True)
    (tmp_path / "into").symlink_to(run / "checkpoints", target_is_directory=True)
    refused = {
        run / "checkpoints" / "new": "only its training writes",
        run / "tensorboard": "only its training writes",
        run / "metrics.csv" / "x": "only its training writes",
        tmp_path / "into" / "new" / "deeper": "only its training writes",  # a link into a run is seen through
        run / "exports" / "a" / "b": "symlink inside the run directory",
    }
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for path, message in refused.items():
        for call in (guard.check_folder, guard.make_folder):
            with pytest.raises(WriteRefused, match=message):
                call(path)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and list(outside.iterdir()) == []
    guard.own(run)
    try:
        guard.make_folder(run / "tensorboard")  # the holder of the lock makes its own folders
    finally:
        guard.disown(run)
    guard.make_folder(run / "studies" / "a")
    assert (run / "tensorboard").is_dir() and (run / "studies" / "a").is_dir()
    guard.make_new_folder(tmp_path / "fresh")
    with pytest.raises(FileExistsError):
        guard.make_new_folder(tmp_path / "fresh")


def test_the_lock_is_opened_in_place_and_never_through_a_link(run: Path, tmp_path: Path) -> None:
    inode = (run / ".lock").stat().st_ino
    fd, created = guard.open_lock(run)
    try:
        assert not created and os.fstat(fd).st_ino == inode  # the same file: its flock is on this inode
    finally:
        os.close(fd)
    victim, outside = tmp_path / "victim", tmp_path / "outside"
    victim.write_text("keep me")
    outside.mkdir()
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(WriteRefused, match="is not a regular file \\(a symlink\\)"):
        guard.open_lock(run)
    (run / "nested").symlink_to(outside, target_is_directory=True)  # a run inside a run, through a link
    with pytest.raises(WriteRefused, match="symlink inside the run directory"):
        guard.open_lock(run / "nested")
    assert victim.read_text() == "keep me" and list(outside.iterdir()) == []
    fd, created = guard.open_lock(tmp_path / "outside")
    os.close(fd)
    assert created and (outside / ".lock").stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_a_new_file_never_replaces_or_follows_anything(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "link.txt").symlink_to(victim)
    (tmp_path / "taken.txt").write_text("old")
    for name in ("link.txt", "taken.txt"):
        with pytest.raises(WriteFailed) as error:
            guard.write_new(tmp_path / name, b"new")
        assert error.value.errno == errno.EEXIST
    guard.write_new(tmp_path / "a" / "new.txt", b"new", mode=0o600)
    assert (tmp_path / "a" / "new.txt").read_bytes() == b"new" and (
        tmp_path / "a" / "new.txt"
    ).stat().st_mode & 0o777 == 0o600
    assert victim.read_text() == "keep me" and (tmp_path / "taken.txt").read_text() == "old"


def test_a_writer_given_an_open_folder_writes_where_the_guard_checked(tmp_path: Path) -> None:
    folder, moved, elsewhere = tmp_path / "run" / "tensorboard", tmp_path / "moved", tmp_path / "elsewhere"
    elsewhere.mkdir()
    fd, reached = guard.open_folder(folder)
    try:
        folder.rename(moved)  # later swapped for a link: the writer still writes into the folder it was given
        folder.symlink_to(elsewhere, target_is_directory=True)
        Path(reached, "events").write_text("x")
    finally:
        os.close(fd)
    assert reached != str(folder) and (moved / "events").read_text() == "x" and list(elsewhere.iterdir()) == []


def test_the_caches_write_through_the_guard(run: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from resnets.data import cache
    from resnets.models import profile

    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    cache.store_entry(run / "checkpoints", "image-folder", "k" * 32, {"x": np.zeros(3)}, {})
    profile._write_counts(run / "checkpoints" / "model-counts.json", "key", {})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # refused: no file, no folder
    assert "could not write the data cache" in caplog.text
    cache.store_entry(run / "cache", "image-folder", "k" * 32, {"x": np.arange(3)}, {"n": 1})
    arrays, meta = cache.load_entry(run / "cache", "image-folder", "k" * 32)
    assert arrays["x"].tolist() == [0, 1, 2] and meta == {"n": 1, "arrays": ["x"]}
    assert sorted(p.name for p in (run / "cache" / "image-folder" / ("k" * 32)).iterdir()) == ["meta.json", "x.npy"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
