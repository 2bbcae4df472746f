"""torchrun on CPU (gloo): ranks stop together, a stopped 2-process run resumes bit for bit, and DDP's average
over 2 processes at batch b is the step of 1 process at batch 2b."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.errors import ConfigError
from resnets.train import resume_config, train
from tests.helpers import torchrun, why
from tests.train.conftest import tiny_bundle
from tests.train.test_conveniences import ALL_SIX as ALL_CONVENIENCES  # the stop test runs with all on

PRELUDE = """
import os, pathlib, signal, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from train.conftest import tiny_bundle, tiny_config
from resnets.train import TrainingInterrupted, resume_config, train
from resnets.train.distributed import Distributed
out, mode = sys.argv[1], sys.argv[2]
rank = os.environ["RANK"]
"""

# Rank 1 alone gets SIGTERM while it builds its first batch of the second epoch (its 4th step): before the
# ranks agreed on stopping, rank 0 then died with gloo's "Connection closed by peer".
# OPTIONS is replaced by the recipe overrides of the run (stop_script).
STOP = """
batches = Distributed.batches
def signalled(self, loader, epoch, start):
    for index, batch in enumerate(batches(self, loader, epoch, start)):
        if mode == "stop" and rank == "1" and epoch == 1 and index == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        yield batch
Distributed.batches = signalled
try:
    if mode == "resume":
        summary = train(resume_config(out), data=tiny_bundle(), resume=True)
    else:
        summary = train(tiny_config(out, epochs=2, **OPTIONS), data=tiny_bundle())
    pathlib.Path(out + ".rank" + rank).write_text("done %d" % summary["steps"])
except TrainingInterrupted as stopped:
    pathlib.Path(out + ".rank" + rank).write_text("stopped " + str(stopped))
"""

# The same run with a model without BatchNorm (DDP averages gradients; BN statistics would be per rank) and
# no augmentation, in 2 processes at batch 16 and in 1 process at batch 32: the same samples in each step.
EQUIVALENCE = """
import dataclasses
config = tiny_config(out, epochs=1)
config = dataclasses.replace(config, model="resmlp_identity_20", snapshot_steps=(0,), recipe=dataclasses.replace(
    config.recipe, batch_size=int(sys.argv[3]), augment=False, label_smoothing=0.0))
train(config, data=tiny_bundle())
"""


# Rank 1 dies (exit 1, no checkpoint) at step 5, once. What torchrun --max-restarts then does is start the same
# command again, which continues the run from its last checkpoint (step 3) as --auto-resume does. The test
# starts it again itself: torchrun's own restart sometimes hands the new round the
# old round's addresses here (gloo "Connection refused"), which would make the test fail for torchrun's sake.
RESTART = """
marker = pathlib.Path(out + ".crashed")
batches = Distributed.batches
def crashing(self, loader, epoch, start):
    for index, batch in enumerate(batches(self, loader, epoch, start)):
        if rank == "1" and epoch == 1 and index == 1 and not marker.exists():
            marker.write_text("once")
            os._exit(1)
        yield batch
Distributed.batches = crashing
from resnets.train import has_checkpoint
resume = has_checkpoint(out)
config = resume_config(out) if resume else tiny_config(out, epochs=2)
summary = train(config, data=tiny_bundle(), resume=resume)
pathlib.Path(out + ".rank" + rank).write_text("done %d, resumed %s" % (summary["steps"], resume))
"""


def write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "run.py"
    tests = str(Path(__file__).parents[1])
    script.write_text(textwrap.dedent(PRELUDE.format(tests=tests)) + textwrap.dedent(body))
    return script


def stop_script(tmp_path: Path, options: dict) -> Path:
    """The STOP script for a run with these recipe overrides."""
    return write_script(tmp_path, STOP.replace("OPTIONS", repr(options)))


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


@pytest.mark.slow
def test_two_processes_at_batch_b_step_like_one_process_at_batch_2b(tmp_path: Path) -> None:
    script = write_script(tmp_path, EQUIVALENCE)
    two = torchrun(script, str(tmp_path / "two"), "two", "16")
    assert two.returncode == 0, why(two)
    one = torchrun(script, str(tmp_path / "one"), "one", "32", processes=1)
    assert one.returncode == 0, why(one)
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
