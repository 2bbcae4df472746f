"""Short runs get the schedule they ask for: ``--max-steps`` alone sets the horizon and fits the warm-up (Hugging
Face's Trainer's rule), ``--epochs E --max-steps N`` stops early on E epochs' curve, and the banner says where the
lr stands at the last step whenever that is not the end of the schedule. Resuming and extending still work."""

from __future__ import annotations

import csv
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from resnets.cli import build_parser, main
from resnets.cli.train import new_run_config, sourced_overrides
from resnets.device import resolve_precision
from resnets.models import create_model
from resnets.train import LRSchedule, TrainConfig
from resnets.train.banner import banner_lines

from .conftest import TINY
from .test_run_output import _bundle

FASHION_STEPS = 468  # steps per epoch of Fashion-MNIST's 60,000 images at batch 128


def _config(*argv: str) -> TrainConfig:
    """A run of resnet20 named without a recipe: recipe 'default', whose batch 128 gives FASHION_STEPS."""
    return new_run_config(*sourced_overrides(build_parser().parse_args(["train", "--model", "resnet20", *argv])))


def _banner(config: TrainConfig, steps_per_epoch: int, last_step: int) -> list[str]:
    return banner_lines(
        config,
        model=create_model("resnet20", num_classes=10, in_channels=1),
        bundle=_bundle(train=50, val=0, test=20),
        layout="image",
        precision=resolve_precision(torch.device("cpu"), False, None),
        device_name="cpu (2 threads)",
        steps_per_epoch=steps_per_epoch,
        last_step=last_step,
        run_dir="runs/x",
    )


def test_max_steps_alone_is_the_horizon_and_the_warm_up_takes_its_share() -> None:
    recipe = _config("--max-steps", "50").recipe
    # the default recipe warms up for 0.5 of its 6 epochs: 1/12 of 50 steps is 4 steps
    assert (recipe.epochs, recipe.max_steps, recipe.warmup_steps) == (None, 50, 4)
    schedule = LRSchedule(recipe, steps_per_epoch=FASHION_STEPS, total_steps=50)
    assert schedule.lr(0) == pytest.approx(0.02) and schedule.lr(4) == pytest.approx(0.2)  # the peak is reached
    assert schedule.lr(49) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 45 / 46)))
    assert schedule.lr(49) < 0.001 and schedule.end_step() == 50
    lines = _banner(_config("--max-steps", "50"), FASHION_STEPS, 50)
    assert lines[4] == "schedule  cosine to 0, warm-up 4 steps from 0.1 x lr, label smoothing 0.1"
    assert lines[5] == "length    50 steps = 0.1068 epochs of 468 steps (max_steps); evaluated every epoch"
    assert not any(line.startswith("last lr") for line in lines)  # the run ends where its schedule ends


def test_epochs_and_max_steps_stop_early_on_the_epochs_curve_and_the_banner_says_where() -> None:
    config = _config("--epochs", "6", "--max-steps", "50")
    assert (config.recipe.epochs, config.recipe.max_steps, config.recipe.warmup_steps) == (6, 50, None)
    lines = _banner(config, FASHION_STEPS, 50)
    assert lines[4] == "schedule  cosine to 0, warm-up 0.5 epochs (234 steps) from 0.1 x lr, label smoothing 0.1"
    # the run: lr 0.02 -> 0.02 + 0.18 * 49 / 234 = 0.0577 at its last step, inside the warm-up
    assert lines[6] == (
        "last lr   0.0577 at step 50, the run's last; still in the warm-up of 234 steps; the cosine reaches 0 at "
        "step 2,808 (--max-steps without --epochs fits it to the run)"
    )


def test_a_warm_up_given_in_any_form_is_kept(tmp_path: Path) -> None:
    assert _config("--max-steps", "50", "--warmup-epochs", "1").recipe.warmup_steps is None
    assert _config("--max-steps", "50", "--warmup-steps", "0").recipe.warmup_steps == 0
    assert _config("--max-steps", "50", "--set", "warmup_epochs=0").recipe.warmup_epochs == 0
    assert _config("--max-steps", "50", "--recipe", "fast").recipe.warmup_steps == 5  # 1 of 10 epochs
    assert _config("--max-steps", "50", "--recipe", "he2015-cifar").recipe.warmup_steps is None  # it has none
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3}))
    config = _config("--config", str(path), "--max-steps", "50")  # the file's epochs stay the horizon
    assert (config.recipe.epochs, config.recipe.max_steps, config.recipe.warmup_steps) == (3, 50, None)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--sched", "step", "--milestones", "30", "60"), "the milestones at steps 60 are not reached"),
        (("--sched", "linear"), "the linear reaches 0 at step 100"),
        (("--sched", "constant", "--warmup-epochs", "8"), "still in the warm-up of 80 steps"),
    ],
)
def test_the_last_lr_line_for_each_schedule(argv: tuple[str, ...], expected: str) -> None:
    lines = _banner(_config("--epochs", "10", "--max-steps", "60", *argv), 10, 60)
    last = [line for line in lines if line.startswith("last lr")]
    assert len(last) == 1 and expected in last[0]
    whole = _banner(_config("--epochs", "10", *argv), 10, 100)  # the whole curve: no line
    assert not any(line.startswith("last lr") for line in whole)


def _lrs(run: Path) -> list[float]:
    with open(run / "steps.csv") as file:
        return [float(row["lr"]) for row in csv.DictReader(file)]


def test_a_stopped_short_run_continues_bit_for_bit_with_the_same_command(
    tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--auto-resume reruns the same command (torchrun --max-restarts): the horizon, the warm-up and the weights
    come out as in one uninterrupted run; extending it with a larger --max-steps then trains on to that step."""
    from resnets.train import progress

    def command(out: Path, steps: int) -> list[str]:
        return ["train", "--model", TINY, "--data", str(tree), "-b", "8", "--max-steps", str(steps), "--quiet"] + [
            "--out",
            str(out),
            "--auto-resume",
        ]

    original = progress.Progress.update

    def update_and_signal(self, state, lr):
        original(self, state, lr)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress.Progress, "update", update_and_signal)
    assert main(command(tmp_path / "parts", 8)) == 130
    monkeypatch.undo()
    assert main(command(tmp_path / "parts", 8)) == 0
    assert main(command(tmp_path / "whole", 8)) == 0
    whole, parts = (load_file(tmp_path / name / "checkpoints/last.safetensors") for name in ("whole", "parts"))
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    lrs = _lrs(tmp_path / "whole")
    assert _lrs(tmp_path / "parts") == lrs and len(lrs) == 8
    assert lrs[0] == pytest.approx(0.02) and lrs[1] == pytest.approx(0.2)  # a 1-step warm-up (8/12, rounded)
    assert lrs[-1] < 0.01  # the cosine ends with the run, at step 8
    assert main(["train", "--resume", str(tmp_path / "whole"), "--max-steps", "12", "--quiet"]) == 0
    extended = _lrs(tmp_path / "whole")
    assert len(extended) == 12 and extended[:8] == lrs and extended[-1] < 0.01  # on to the new horizon
