"""The speedrun's tricks, each checked against a hand computation, and a run with all of them on: its compute
counted by hand, its whitening frozen, its evaluation reproduced by `resnets eval`, its resume bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from resnets import create_model
from resnets.cli import main
from resnets.data import ArrayDataset, BatchLoader
from resnets.data.augment import BatchAugment
from resnets.models.profile import count_macs
from resnets.train import TrainConfig, apply_overrides, final_line, resume_config, train
from resnets.train.engine import Trainer
from resnets.train.lookahead import Lookahead
from resnets.train.optim import make_optimizer, set_lr
from resnets.tta import TestTimeAugmentation, augmented_logits

from .conftest import TINY, tiny_bundle, tiny_config

#: A speedrun net small enough for a test: widths 4-8-8 on 16x16 images (its smallest input is 9x9).
SMALL = {"widths": (4, 8, 8)}
#: Every trick of cifar10-speedrun, at sizes that fit two epochs of 64 images.
TRICKS = {
    "whiten_images": 32,
    "whiten_bias_epochs": 1.0,
    "bias_lr_scale": 4.0,
    "lookahead_every": 2,
    "lookahead_start_epochs": 0.5,
    "alternating_flip": True,
    "pad_mode": "reflect",
    "crop_padding": 2,
    "tta": 2,
}


def write_tree16(root: Path, n_train: int = 32, n_test: int = 8) -> Path:
    """root/{train,test}/{top,bottom}/*.png: 16x16 RGB images, bright in the half that names the class (per
    class: ``n_train`` and ``n_test``); flips keep the label, so mirrored test-time views are used."""
    rng = np.random.default_rng(5)
    for split, count in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(("top", "bottom")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
                image[8 * label : 8 * label + 8] += 120
                Image.fromarray(image, "RGB").save(folder / f"{i}.png")
    return root


def speedrun_config(out: Path, data: Path, **overrides) -> TrainConfig:
    values = {"recipe": "cifar10-speedrun", "epochs": 2, "batch_size": 16, "eval_every": 1, **TRICKS, **overrides}
    config = TrainConfig(model="speedrun", model_options=dict(SMALL), seed=3, device="cpu", quiet=True)
    return apply_overrides(config, {**values, "data": str(data), "out": str(out)})


def test_a_runs_compute_is_six_macs_per_trained_and_two_per_evaluated_sample(tmp_path: Path) -> None:
    # TINY on 1x8x8: stem 1->4 3x3 (64 px x 4 x 9), block 4->4 (2 x 64 x 4 x 36), block 4->8 at stride 2
    # (16 x 8 x 36 + 16 x 8 x 72), option-A shortcut (none), fc 8 -> 2.
    macs = 64 * 4 * 9 + 2 * 64 * 4 * 36 + 16 * 8 * 36 + 16 * 8 * 72 + 8 * 2
    assert count_macs(create_model(TINY, num_classes=2, in_channels=1), (1, 8, 8)) == macs == 34_576
    assert count_macs(create_model("resnet20"), (3, 32, 32)) == 40_551_040  # He et al.'s "41 M"
    summary = train(tiny_config(tmp_path / "run", epochs=2), data=tiny_bundle())
    compute = summary["compute"]
    # 2 epochs of 6 steps at batch 16; the 32 test images evaluated at the end of each epoch, one view each
    assert compute["macs_per_sample"] == macs
    assert compute["train_pflop"] == pytest.approx(6 * macs * 12 * 16 / 1e15, rel=1e-12)
    assert compute["eval_pflop"] == pytest.approx(2 * macs * 2 * 32 / 1e15, rel=1e-12)
    assert compute["pflop"] == pytest.approx(compute["train_pflop"] + compute["eval_pflop"], rel=1e-12)
    assert compute["peak_flops"] > 0 and 0 < compute["peak_share"] < 1
    share = 100 * compute["pflop"] * 1e15 / summary["wall_time_s"] / compute["peak_flops"]
    assert f", {compute['pflop']:.3g} PFLOP at {share:.0f}% of this machine's peak; run dir" in final_line(summary)


def test_lookahead_pulls_the_weights_to_their_running_average_by_hand() -> None:
    model = nn.Linear(1, 1, bias=False)
    lookahead = Lookahead(every=2, decay=0.5, power=1.0, start_step=2, last_step=4)
    values = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    for step, value in values.items():
        with torch.no_grad():
            model.weight.fill_(value)  # what the optimiser step left
        lookahead.after_step(model, step)
        if step == 2:  # the first pull starts the average where the weights are
            assert lookahead.average["weight"].item() == 2.0 and model.weight.item() == 2.0
    # step 4: rho = 0.5^2 x (4/4)^1 = 0.25; average = 0.25 x 2 + 0.75 x 4, and the weights move there
    assert model.weight.item() == pytest.approx(3.5) and lookahead.average["weight"].item() == pytest.approx(3.5)
    with torch.no_grad():
        model.weight.fill_(9.0)
    lookahead.end_epoch(model)  # an epoch's end sets the weights to the average
    assert model.weight.item() == pytest.approx(3.5)


def test_test_time_views_and_their_weights_by_hand() -> None:
    weights = torch.arange(16.0).view(1, 1, 4, 4)  # a "model" that sees where each pixel lies

    def logits(x: torch.Tensor) -> torch.Tensor:
        return (x * weights).sum(dim=(1, 2, 3))[:, None]

    x = torch.randn(2, 1, 4, 4)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :4, :4], padded[..., 2:, 2:]]

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * logits(images) + 0.5 * logits(images.flip(-1))

    expected = 0.5 * mirrored(x) + 0.25 * mirrored(shifted[0]) + 0.25 * mirrored(shifted[1])
    assert torch.allclose(augmented_logits(logits, x, 2, mirror=True), expected)
    no_mirror = 0.5 * logits(x) + 0.25 * logits(shifted[0]) + 0.25 * logits(shifted[1])
    assert torch.allclose(augmented_logits(logits, x, 2, mirror=False), no_mirror)
    assert torch.allclose(augmented_logits(logits, x, 1, mirror=True), mirrored(x))
    assert torch.equal(augmented_logits(logits, x, 0, mirror=True), logits(x))
    views = [TestTimeAugmentation(level, mirror).views for level in (0, 1, 2) for mirror in (True, False)]
    assert views == [1, 1, 2, 1, 6, 3]


def test_alternating_flips_mirror_each_image_on_every_other_epoch_and_reflect_pads() -> None:
    images = torch.arange(8 * 4 * 4, dtype=torch.uint8).view(8, 1, 4, 4)  # no image is its own mirror
    data = ArrayDataset(images, torch.zeros(8, dtype=torch.int64))
    augment = BatchAugment(pad=0, flip=True, alternating_flip=True)
    loader = BatchLoader(data, 8, shuffle=False, seed=1, augment=augment, mean=(0.0,), std=(1 / 255,))
    first, second, third = (loader.batch(epoch, 0)[0] for epoch in (0, 1, 2))
    mirrored = [bool(torch.equal(first[i], images[i].flip(-1).float())) for i in range(8)]
    assert 0 < sum(mirrored) < 8  # the first orientation is drawn per image
    for i in range(8):  # the next epoch shows each image the other way round, the one after as the first
        assert torch.equal(second[i], first[i].flip(-1)) and torch.equal(third[i], first[i])
    reflect = BatchAugment(pad=2, flip=False, pad_mode="reflect")(images + 1, torch.Generator().manual_seed(0))
    assert int(reflect.min()) >= 1  # every pixel comes from the image: no black border
    zeros = BatchAugment(pad=2, flip=False)(images + 1, torch.Generator().manual_seed(0))
    assert int(zeros.min()) == 0


def test_bias_groups_and_the_whitening_bias_follow_their_lr_scale_and_length() -> None:
    model = create_model("speedrun", **SMALL)
    recipe = apply_overrides(TrainConfig(), {"recipe": "cifar10-speedrun", "bias_lr_scale": 64.0}).recipe
    optimizer = make_optimizer(model, recipe)
    weights, small, whitening = optimizer.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in small["params"])
    assert whitening["params"] == [model.whiten.bias] and whitening["train_epochs"] == 3.0
    assert small["weight_decay"] == pytest.approx(recipe.weight_decay / 64)  # the same decay per step
    set_lr(optimizer, 0.1, epoch=2.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 6.4, 0.1])
    set_lr(optimizer, 0.1, epoch=3.0)  # the whitening bias has trained its 3 epochs
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 6.4, 0.0])
    plain = make_optimizer(model, apply_overrides(TrainConfig(), {}).recipe)
    assert len(plain.param_groups) == 1  # the default recipe keeps the groups of earlier versions


def test_the_speedrun_recipe_names_its_model_unless_the_run_names_one() -> None:
    assert apply_overrides(TrainConfig(), {"recipe": "cifar10-speedrun"}).model == "speedrun"
    assert apply_overrides(TrainConfig(), {"recipe": "cifar10-speedrun", "model": "resnet20"}).model == "resnet20"
    assert apply_overrides(TrainConfig(), {"recipe": "fast"}).model == "resnet20"


@pytest.mark.slow
def test_a_run_with_every_trick_freezes_its_whitening_evaluates_as_eval_does_and_resumes_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    data = write_tree16(tmp_path / "tree")
    whole = tmp_path / "whole"
    summary = train(speedrun_config(whole, data, snapshot_steps=(0, 4)))  # 64 images: 4 steps per epoch
    first = load_file(whole / "checkpoints" / "step-0.safetensors")  # right after the fit
    after_one = load_file(whole / "checkpoints" / "step-4.safetensors")
    last = load_file(whole / "checkpoints" / "last.safetensors")
    assert torch.equal(first["whiten.weight"], last["whiten.weight"])  # fitted once, then frozen
    assert not torch.equal(first["whiten.bias"], after_one["whiten.bias"])  # trained in epoch 1 ...
    assert torch.equal(after_one["whiten.bias"], last["whiten.bias"])  # ... and frozen after it
    macs = summary["compute"]["macs_per_sample"]  # 16 test images, 6 views each, evaluated after both epochs
    assert summary["compute"]["eval_pflop"] == pytest.approx(2 * macs * 16 * 6 * 2 / 1e15, rel=1e-12)

    capsys.readouterr()
    assert main(["eval", str(whole), "--no-compile"]) == 0  # eval measures the checkpoint as training did
    described = json.loads((whole / "eval-test" / "eval.json").read_text())
    assert "test-time augmentation level 2 (6 views)" in described["inference"]
    assert described["top1_error"] == pytest.approx(summary["test_error"], abs=1e-9)

    parts = tmp_path / "parts"
    train(speedrun_config(parts, data, max_steps=3))  # stops inside the first epoch, mid-lookahead
    train(resume_config(parts, {"max_steps": None}), resume=True)
    resumed = load_file(parts / "checkpoints" / "last.safetensors")
    assert all(torch.equal(resumed[k], last[k]) for k in last)
    assert (parts / "steps.csv").read_text() == (whole / "steps.csv").read_text()


def test_steps_are_read_by_the_host_once_per_log_interval(tmp_path: Path, monkeypatch) -> None:
    taken: list[int] = []
    flush = Trainer._flush

    def spy(self, pending):
        if pending:
            taken.append(len(pending))
        return flush(self, pending)

    monkeypatch.setattr(Trainer, "_flush", spy)
    train(apply_overrides(tiny_config(tmp_path / "run", epochs=2), {"log_every": 4}), data=tiny_bundle())
    # 6 steps per epoch: reads after steps 4 and 6 (the epoch's end), then 8 and 12 (the count goes on)
    assert taken == [4, 2, 2, 4]
