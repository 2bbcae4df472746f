"""torchrun on CPU (gloo): a signal to one rank stops every rank cleanly, and the stopped 2-process run resumes bit
for bit (each torchrun test has its own file, so that the test workers run them side by side)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.errors import ConfigError
from resnets.train import resume_config, train
from tests.helpers import torchrun, why
from tests.train.conftest import tiny_bundle
from tests.train.distributed_scripts import stop_script
from tests.train.test_conveniences import ALL_SIX as ALL_CONVENIENCES  # the stop test runs with all on


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_cleanly_and_the_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    # With every training convenience on: the DDP check of their bit-exact resume.
    script = stop_script(tmp_path, ALL_CONVENIENCES)
    stopped = tmp_path / "stopped"
    result = torchrun(script, str(stopped), "stop")
    assert "Connection closed" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    outcomes = [(tmp_path / f"stopped.rank{rank}").read_text() for rank in (0, 1)]
    assert outcomes[0].startswith("stopped stopped by a signal to another rank at step 4;"), outcomes
    assert outcomes[1].startswith("stopped stopped by signal 15 at step 4;"), outcomes
    assert torch.load(stopped / "checkpoints" / "last.state.pt", weights_only=True)["step"] == 4

    with pytest.raises(ConfigError, match="trained by 2 process\\(es\\) and is resumed by 1"):
        train(resume_config(stopped), data=tiny_bundle(), resume=True)  # half the global batch: refused
    resumed = torchrun(script, str(stopped), "resume")
    assert resumed.returncode == 0, why(resumed)
    assert [(tmp_path / f"stopped.rank{rank}").read_text() for rank in (0, 1)] == ["done 6", "done 6"]
    straight = tmp_path / "straight"
    uninterrupted = torchrun(script, str(straight), "straight")
    assert uninterrupted.returncode == 0, why(uninterrupted)
    resumed_weights = load_file(stopped / "checkpoints" / "last.safetensors")
    straight_weights = load_file(straight / "checkpoints" / "last.safetensors")
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)
    resumed_state = torch.load(stopped / "checkpoints" / "last.state.pt", weights_only=True)["raw_weights"]
    straight_state = torch.load(straight / "checkpoints" / "last.state.pt", weights_only=True)["raw_weights"]
    assert all(torch.equal(resumed_state[k], straight_state[k]) for k in straight_state)  # EMA and raw weights
