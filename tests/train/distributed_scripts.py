"""The scripts that the torchrun tests run (tests/train/test_distributed_*.py): each rank trains a tiny run of
tests/train/conftest.py, signalled, crashed or at a batch size given on its command line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

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
# no augmentation, in 2 processes at batch 16 (this script) and in 1 process at batch 32 (the test itself, through
# equivalence_config): the same samples in each step.
EQUIVALENCE = """
from train.distributed_scripts import equivalence_config
train(equivalence_config(out, int(sys.argv[3])), data=tiny_bundle())
"""


def equivalence_config(out: str, batch_size: int) -> Any:
    """The run of the DDP equivalence test at ``batch_size``: resmlp_identity_20, one epoch, no augmentation."""
    from train.conftest import tiny_config  # the scripts' import path: tests/ is on sys.path there

    config = tiny_config(out, epochs=1)
    recipe = dataclasses.replace(config.recipe, batch_size=batch_size, augment=False, label_smoothing=0.0)
    return dataclasses.replace(config, model="resmlp_identity_20", snapshot_steps=(0,), recipe=recipe)


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
