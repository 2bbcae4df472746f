"""The training loop on a tiny model: learning, the run directory, bit-exact resume, and its errors."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from resnets.errors import CheckpointError, ResnetsError, TrainingDivergedError
from resnets.runs import METRIC_COLUMNS
from resnets.train import final_line, resume_config, train

from .conftest import TINY, tiny_bundle, tiny_config


def test_training_lowers_the_loss(tmp_path, bundle):
    summary = train(tiny_config(tmp_path / "run", epochs=4), data=bundle)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.05
    assert summary["steps"] == 4 * (96 // 16) and summary["epochs"] == 4
    assert summary["test_accuracy"] == pytest.approx(100.0 - summary["test_error"])


@pytest.mark.pinned_precision("plays both kinds of CPU itself")
@pytest.mark.parametrize("native_bf16", [False, True])  # both precision branches, whatever this CPU has
def test_run_directory_holds_every_file_with_the_right_columns(tmp_path, play_cpu, native_bf16):
    play_cpu(native_bf16)
    run = tmp_path / "run"
    summary = train(tiny_config(run, epochs=2), data=tiny_bundle(val=16))
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    for name in (
        "config.json",
        "env.json",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "curves.png",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
        "checkpoints/last.state.pt",
        "checkpoints/last.json",
    ):
        assert name in names, name
    assert not [n for n in names if n.endswith((".tmp", ".staged", ".pending"))]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == TINY and config["num_classes"] == 2 and config["in_channels"] == 1
    assert config["input_kind"] == "image" and config["data"]["classes"] == ["left", "right"]
    assert config["data"]["sample_shape"] == [1, 8, 8] and config["data"]["mean"] == [0.35]
    assert config["recipe"]["batch_size"] == 16 and config["device"] == "cpu"
    assert config["amp"] is native_bf16 and config["amp_dtype"] == "bfloat16" and config["selection"] == "val"
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["resnets_version"] and "cpu_count" in env
    with open(run / "metrics.csv") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == METRIC_COLUMNS + ["val_loss", "val_error"]
    assert [int(r["step"]) for r in rows] == [6, 12] and float(rows[0]["images_per_s"]) > 0
    saved = json.loads((run / "summary.json").read_text())
    assert saved["steps"] == 12 and saved["test_error"] == summary["test_error"] and saved["params"] > 0
    assert {"wall_time_s", "val_error", "best"} <= set(saved) and saved["checkpoint"] == "best"
    assert not {"best_test_error", "best_epoch"} & set(saved)  # no figure chosen on the test split
    chosen = min(rows, key=lambda r: (float(r["val_error"]), float(r["epoch"])))
    assert saved["best"]["epoch"] == float(chosen["epoch"])
    assert saved["best"]["test_error"] == pytest.approx(float(chosen["test_error"]))
    with safe_open(str(run / "checkpoints/last.safetensors"), "pt") as handle:
        assert handle.metadata() == {"model": TINY, "step": "12", "format": "resnets-checkpoint-1"}
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert final_line(summary).startswith(f"test accuracy: {summary['test_accuracy']:.2f}% (test error ")


def test_without_a_validation_split_there_is_no_best_checkpoint(tmp_path, bundle):
    """Choosing a "best" epoch on the test split would bias the test error: such runs keep only "last"."""
    run = tmp_path / "run"
    summary = train(tiny_config(run, epochs=3), data=bundle)
    assert (run / "checkpoints/last.safetensors").exists() and not (run / "checkpoints/best.safetensors").exists()
    assert summary["checkpoint"] == "last" and "best" not in summary
    assert json.loads((run / "config.json").read_text())["selection"] is None
    assert "best.safetensors" not in json.loads((run / "checkpoints/last.json").read_text())["files"]


@pytest.mark.parametrize("stop_at", [4, 6])  # mid-epoch and on an epoch boundary (6 steps per epoch)
def test_resume_is_bit_exact(tmp_path, bundle, stop_at):
    options = {"epochs": 3, "model_options": {"drop_path_rate": 0.2}}  # drop path draws from the global RNG
    train(tiny_config(tmp_path / "whole", **options), data=bundle)
    train(tiny_config(tmp_path / "parts", max_steps=stop_at, **options), data=bundle)
    assert json.loads((tmp_path / "parts/summary.json").read_text())["steps"] == stop_at
    resumed = resume_config(tmp_path / "parts", {"max_steps": None})
    summary = train(resumed, data=bundle, resume=True)
    assert summary["steps"] == 18
    whole = load_file(str(tmp_path / "whole/checkpoints/last.safetensors"))
    parts = load_file(str(tmp_path / "parts/checkpoints/last.safetensors"))
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    rows = [json.loads(line) for line in (tmp_path / "parts/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # the partial epoch's row was replaced
    # the per-step log is the uninterrupted run's, byte for byte: one row per step, none lost or repeated
    assert (tmp_path / "parts/steps.csv").read_text() == (tmp_path / "whole/steps.csv").read_text()


def test_the_step_log_holds_each_steps_learning_rate_loss_and_batch_error(tmp_path, bundle):
    from resnets.runs.directory import RunDir

    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), data=bundle)
    steps = RunDir(run).read_steps()
    assert [r["step"] for r in steps] == list(range(1, 13))
    # a batch of 16 images: its error is a multiple of 1/16, in percent
    assert all(0 <= r["error"] <= 100 and (r["error"] * 16 / 100).is_integer() for r in steps)
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in steps)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # an epoch's running training error is the mean of its batches' errors (equal batches)
    first_epoch = sum(r["error"] for r in steps[:6]) / 6
    assert rows[0]["train_error"] == pytest.approx(first_epoch)


def test_resume_extends_a_finished_run(tmp_path, bundle):
    train(tiny_config(tmp_path / "run", epochs=1), data=bundle)
    summary = train(resume_config(tmp_path / "run", {"epochs": 2}), data=bundle, resume=True)
    assert summary["steps"] == 12 and summary["epochs"] == 2


def test_resume_refuses_a_different_model(tmp_path, bundle):
    train(tiny_config(tmp_path / "run", max_steps=1), data=bundle)
    with pytest.raises(ResnetsError, match="cannot change --model when resuming"):
        resume_config(tmp_path / "run", {"model": "resnet20"})
    with pytest.raises(ResnetsError, match="cannot switch recipe"):
        resume_config(tmp_path / "run", {"recipe": "he2015-cifar"})
    assert resume_config(tmp_path / "run", {"recipe": "fast", "lr": 0.01}).recipe.lr == 0.01


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path, bundle):
    run = tmp_path / "run"
    train(tiny_config(run, epochs=1), data=bundle)
    manifest = (run / "checkpoints/last.json").read_text()
    before = (run / "checkpoints/last.safetensors").read_bytes()
    config = resume_config(run, {"epochs": 3, "lr": 1e6, "warmup_epochs": 0})
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ .*last good checkpoint \(step 6\)") as caught:
        train(config, data=bundle, resume=True)
    assert caught.value.step > 6 and f"at step {caught.value.step} " in str(caught.value)
    from resnets.runs.directory import RunDir

    steps = RunDir(run).read_steps()  # the curve up to the divergence is kept for diagnosis
    assert steps[-1]["step"] == caught.value.step and not math.isfinite(steps[-1]["loss"])
    assert (run / "checkpoints/last.json").read_text() == manifest
    assert (run / "checkpoints/last.safetensors").read_bytes() == before


def test_checksum_mismatch_is_detected_on_resume(tmp_path, bundle):
    run = tmp_path / "run"
    train(tiny_config(run, max_steps=2), data=bundle)
    weights = load_file(str(run / "checkpoints/last.safetensors"))
    weights["fc.bias"] += 1.0
    save_file(weights, str(run / "checkpoints/last.safetensors"))
    with pytest.raises(CheckpointError, match="last.safetensors.*sha256"):
        train(resume_config(run, {"max_steps": 4}), data=bundle, resume=True)


def test_explicit_in_channels_must_match_the_data(tmp_path, bundle):
    config = replace(tiny_config(tmp_path / "run"), in_channels=3)
    with pytest.raises(ResnetsError, match="--in-channels 3 does not match the data.*1 input channels"):
        train(config, data=bundle)


def test_weights_for_three_channels_are_refused_on_one_channel_data(tmp_path, bundle):
    train(tiny_config(tmp_path / "rgb", max_steps=1), data=tiny_bundle(channels=3))
    config = replace(tiny_config(tmp_path / "gray"), weights=str(tmp_path / "rgb/checkpoints/last.safetensors"))
    with pytest.raises(ResnetsError, match="built for 3 input channels but the data gives the model 1"):
        train(config, data=bundle)


def test_an_existing_run_is_not_overwritten(tmp_path, bundle):
    train(tiny_config(tmp_path / "run", max_steps=1), data=bundle)
    with pytest.raises(ResnetsError, match="already holds a run"):
        train(tiny_config(tmp_path / "run", max_steps=1), data=bundle)


def test_the_model_input_kind_decides_the_layout():
    from resnets.data.layout import layout_for

    assert layout_for("image", "image", (3, 32, 32)) == ("image", 3)
    assert layout_for("vector", "image", (1, 28, 28)) == ("vector", 784)
    assert layout_for("sequence", "image", (3, 32, 32)) == ("sequence", 96)
    assert layout_for("vector", "vector", (20,)) == ("vector", 20)
    with pytest.raises(ResnetsError, match="tabular"):
        layout_for("image", "vector", (20,), "resnet20")


def test_snapshots_keep_the_weights_of_chosen_steps_and_open_as_checkpoints(tmp_path, bundle):
    from resnets import create_model
    from resnets.runs import open_run

    run = tmp_path / "run"
    config = replace(tiny_config(run, max_steps=5), snapshot_steps=(0, 3))
    train(config, data=bundle)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0.safetensors", "step-3.safetensors"]
    opened = open_run(run, checkpoint="step-0")
    assert opened.snapshots == [0, 3]
    torch.manual_seed(config.seed)  # the run's initial weights are a function of its seed
    initial = create_model(TINY, num_classes=2, in_channels=1).state_dict()
    assert all(torch.equal(initial[k], v) for k, v in opened.model.state_dict().items())
    step3 = open_run(run, checkpoint="step-3").model.state_dict()
    assert not torch.equal(step3["fc.weight"], initial["fc.weight"])
    with pytest.raises(CheckpointError, match="kept no snapshot step-4"):
        open_run(run, checkpoint="step-4")
    (run / "checkpoints" / "step-3.safetensors").write_bytes(b"changed")
    with pytest.raises(CheckpointError, match="corrupt or was changed"):
        open_run(run, checkpoint="step-3")


def test_snapshot_every_keeps_the_initial_weights_and_every_nth_epoch(tmp_path, bundle):
    from resnets.runs import open_run

    run = tmp_path / "run"
    train(replace(tiny_config(run, epochs=4), snapshot_every=2), data=bundle)  # 6 steps per epoch
    assert open_run(run).snapshots == [0, 12, 24]
    last = open_run(run, checkpoint="last").model.state_dict()
    assert all(torch.equal(v, last[k]) for k, v in open_run(run, checkpoint="step-24").model.state_dict().items())
    with pytest.raises(ResnetsError, match="snapshot_every must be an integer >= 0, got -1"):
        train(replace(tiny_config(tmp_path / "bad", epochs=1), snapshot_every=-1), data=bundle)


def test_non_finite_weights_or_buffers_are_never_saved(tmp_path, bundle, monkeypatch):
    """The loss can stay finite while BN running statistics overflow: every save checks every tensor."""
    from resnets.train.engine import Trainer

    original, saves = Trainer._save, []

    def poisoned(self, best):
        saves.append(self.state.step)
        if len(saves) == 2:  # the second save (end of epoch 2): a running variance has overflowed
            model = self.dist.unwrap(self.model)
            next(b for name, b in model.named_buffers() if name.endswith("running_var")).fill_(float("inf"))
        return original(self, best)

    monkeypatch.setattr(Trainer, "_save", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"not finite at step 12 \(first: .*running_var\).*step 6\)") as err:
        train(tiny_config(run, epochs=3), data=bundle)
    assert err.value.step == 12
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 6
    weights = load_file(str(run / "checkpoints/last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
        ("lr", float("inf"), "lr must be a finite number > 0, got inf"),
        ("epochs", 0, "epochs must be"),
        ("epochs", float("nan"), "epochs must be"),
        ("max_steps", -5, "max_steps must be"),
        ("warmup_start_factor", -1, "warmup_start_factor must be"),
        ("weight_decay", -1e-4, "weight_decay must be .*got -0.0001"),
    ],
)
def test_recipe_values_that_cannot_train_are_refused(key, value, message):
    from resnets.train import TrainConfig, apply_overrides

    with pytest.raises(ResnetsError, match=message):
        apply_overrides(TrainConfig(), {key: value})
