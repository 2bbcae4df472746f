"""A study shows progress as ``resnets train`` does: a bar on a terminal, plain lines in a log (no carriage
returns), nothing when quiet."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.studies.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_at_each_tenth_and_no_carriage_return(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress(range(20), desc="lesion resnet20")) == list(range(20))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[0] == "lesion resnet20: 0/20"
    assert [line.split(",")[0] for line in lines[1:]] == [f"lesion resnet20: {2 * k}/20" for k in range(1, 11)]
    assert all(", eta " in line for line in lines[1:])


def test_a_terminal_gets_a_bar_and_quiet_gets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(3), desc="paths")) == [0, 1, 2]
    assert terminal.getvalue().startswith("\rpaths:   0%|")  # tqdm's bar, cleared when done (leave=False)
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(progress(range(3), desc="paths", quiet=True)) == [0, 1, 2] and quiet.getvalue() == ""


def test_a_study_writes_lines_into_a_log_as_train_does(
    batch_bars: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["study", "responses", "--data", str(batch_bars), "--seeds", "2", "--samples", "12", "--steps", "2"]
    argv += ["--model", "resnet20", "--model", "plain20"]
    assert main([*argv, "--out", str(tmp_path)]) == 0  # stderr is captured: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "responses resnet20: 2/2" in err and "responses plain20 snapshots: 0/3" in err
    assert "step 2/2" in err  # the default runs' own training lines, from the training engine
