"""torchrun on CPU (gloo): after a rank crashes, the same command resumes the run to the weights of an
uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import torchrun, why
from tests.train.distributed_scripts import RESTART, stop_script, write_script


@pytest.mark.slow
def test_the_same_command_after_a_crash_resumes_to_the_same_weights(tmp_path: Path) -> None:
    script = write_script(tmp_path, RESTART)
    crashed = tmp_path / "crashed"
    assert torchrun(script, str(crashed), "restart").returncode != 0  # rank 1 died
    assert (tmp_path / "crashed.crashed").exists()
    again = torchrun(script, str(crashed), "restart")  # what --max-restarts runs
    assert again.returncode == 0, why(again)
    assert [(tmp_path / f"crashed.rank{rank}").read_text() for rank in (0, 1)] == ["done 6, resumed True"] * 2
    straight = tmp_path / "straight"
    uninterrupted = torchrun(stop_script(tmp_path, {}), str(straight), "straight")
    assert uninterrupted.returncode == 0, why(uninterrupted)
    restarted_weights = load_file(crashed / "checkpoints" / "last.safetensors")
    straight_weights = load_file(straight / "checkpoints" / "last.safetensors")
    assert all(torch.equal(restarted_weights[k], straight_weights[k]) for k in straight_weights)
