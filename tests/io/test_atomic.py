"""Atomic writes: all or nothing, and the permissions a plain open would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from resnets.io.atomic import atomic_write, atomic_write_text


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask_not_the_temporary_files_0600(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "summary.json", "{}\n")
        atomic_write(tmp_path / "w.bin", lambda tmp: Path(tmp).write_bytes(b"\x00\x01"))
    finally:
        os.umask(previous)
    for name in ("summary.json", "w.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert (tmp_path / "summary.json").read_text() == "{}\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    atomic_write_text(target, "old")

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]
