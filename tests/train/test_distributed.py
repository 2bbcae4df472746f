"""Data-parallel training under torchrun (gloo on CPU): two ranks, one run directory written by rank 0."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.helpers import torchrun, why

SCRIPT = """
import os, pathlib, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from train.conftest import tiny_bundle, tiny_config
from resnets.train import train
summary = train(tiny_config(sys.argv[1], epochs=2), data=tiny_bundle())
# one file per rank: two ranks printing to one pipe interleave their lines
pathlib.Path(sys.argv[1] + ".rank" + os.environ["RANK"]).write_text(str(summary["steps"]))
"""


@pytest.mark.slow
def test_two_ranks_split_each_epoch(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parents[1]))))
    result = torchrun(script, str(tmp_path / "run"), timeout=240)
    assert result.returncode == 0, why(result)
    steps = [(tmp_path / f"run.rank{rank}").read_text() for rank in (0, 1)]
    assert steps == ["6", "6"]  # 96 samples / batch 16 = 6 batches per epoch, 3 per rank, 2 epochs
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert json.loads((tmp_path / "run/checkpoints/last.json").read_text())["step"] == 6
