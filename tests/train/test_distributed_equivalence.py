"""torchrun on CPU (gloo): DDP's average over 2 processes at batch b is the step of one plain process at batch 2b."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.train import train
from tests.helpers import torchrun, why
from tests.train.conftest import tiny_bundle
from tests.train.distributed_scripts import EQUIVALENCE, equivalence_config, write_script


@pytest.mark.slow
def test_two_processes_at_batch_b_step_like_one_process_at_batch_2b(tmp_path: Path) -> None:
    script = write_script(tmp_path, EQUIVALENCE)
    two = torchrun(script, str(tmp_path / "two"), "two", "16")
    assert two.returncode == 0, why(two)
    train(equivalence_config(str(tmp_path / "one"), 32), data=tiny_bundle())  # one plain process, no DDP
    two = load_file(tmp_path / "two" / "checkpoints" / "last.safetensors")
    one = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    assert torch.load(tmp_path / "two/checkpoints/last.state.pt", weights_only=True)["step"] == 3
    start = load_file(tmp_path / "one" / "checkpoints" / "step-0.safetensors")
    moved = {k: one[k] - start[k] for k in one}
    assert max(float(m.abs().max()) for m in moved.values()) > 1e-3  # the three steps moved the weights
    # The two runs' updates compared as a whole: without averaging (each rank stepping on its own half batch)
    # they would differ by a sizeable fraction of the update itself.
    gap = sum(float((two[k] - start[k] - moved[k]).norm() ** 2) for k in one) ** 0.5
    size = sum(float(m.norm() ** 2) for m in moved.values()) ** 0.5
    if json.loads((tmp_path / "one" / "config.json").read_text())["amp"]:
        # bf16 autocast (RESNETS_NATIVE_BF16=1) rounds each half batch's products apart: 1.6e-2 seen
        assert gap / size < 0.1
    else:  # fp32 (the suite's default) sums the same gradients in another order: 4.7e-7 seen
        assert gap / size < 1e-4
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
