"""``resnets train`` end to end on a tiny image-folder tree: a run, a resume through the CLI, and signals."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from resnets.cli import main
from resnets.train import TrainingInterrupted, resume_config, train

from .conftest import TINY, tiny_bundle, tiny_config


def test_cli_trains_resumes_and_prints_the_final_line(tmp_path, tree, capsys):
    run = tmp_path / "run"
    common = [
        "--model",
        TINY,
        "--data",
        str(tree),
        "--recipe",
        "fast",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(["train", *common, "--max-steps", "5", "--out", str(run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("test accuracy: ") and out.endswith(f"run dir: {run}")
    assert ", 5 steps, " in out and len(out.splitlines()) == 1  # --quiet: the final line only
    assert main(["train", "--resume", str(run), "--max-steps", "12", "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["epochs"] == 2  # 48 images / 8 = 6 steps per epoch
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["spec"] == str(tree) and config["data"]["classes"] == ["left", "right"]
    assert config["in_channels"] == 1 and config["recipe"]["max_steps"] == 12


def test_cli_channel_mismatch_is_one_clear_line(tmp_path, tree, capsys):
    code = main(["train", "--model", TINY, "--data", str(tree), "--in-channels", "3", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--in-channels 3 does not match the data" in err and "Traceback" not in err


def test_cli_refuses_to_change_the_model_on_resume(tmp_path, tree, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                TINY,
                "--data",
                str(tree),
                "--batch-size",
                "8",
                "--max-steps",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["train", "--resume", str(run), "--model", "resnet20"]) == 2
    assert "cannot change --model when resuming" in capsys.readouterr().err


def test_sigterm_saves_a_resumable_checkpoint_at_the_current_step(tmp_path, monkeypatch):
    from resnets.train import progress

    bundle = tiny_bundle()
    original = progress.Progress.update

    def update_and_signal(self, state, lr):
        original(self, state, lr)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress.Progress, "update", update_and_signal)
    with pytest.raises(TrainingInterrupted, match="at step 3.*--resume"):
        train(tiny_config(tmp_path / "parts", epochs=2), data=bundle)
    monkeypatch.undo()
    assert json.loads((tmp_path / "parts/checkpoints/last.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed again
    train(resume_config(tmp_path / "parts"), data=bundle, resume=True)
    train(tiny_config(tmp_path / "whole", epochs=2), data=bundle)
    whole = load_file(str(tmp_path / "whole/checkpoints/last.safetensors"))
    parts = load_file(str(tmp_path / "parts/checkpoints/last.safetensors"))
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_auto_resume_starts_a_run_then_continues_it(tmp_path, tree, capsys):
    run = tmp_path / "run"
    common = ["--model", TINY, "--data", str(tree), "--batch-size", "8", "--quiet", "--out", str(run), "--auto-resume"]
    assert main(["train", *common, "--max-steps", "3"]) == 0  # nothing there yet: a new run
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert main(["train", *common, "--max-steps", "5"]) == 0  # the same command again (a restart): it continues
    assert json.loads((run / "summary.json").read_text())["steps"] == 5
    assert [row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())][-1] == 5
    assert main(["train", "--auto-resume", "--model", TINY]) == 2  # it needs the run directory
    assert "--auto-resume needs --out" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "garbage"), [("metrics.jsonl", "{not json\n"), ("steps.csv", "step,lr\nx,y\n")])
def test_a_damaged_log_stops_a_resume_with_one_line(tmp_path, tree, capsys, name, garbage):
    run = tmp_path / "run"
    common = ["--model", TINY, "--data", str(tree), "--batch-size", "8", "--quiet"]
    assert main(["train", *common, "--max-steps", "3", "--out", str(run)]) == 0
    with open(run / name, "a") as log:
        log.write(garbage)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name}' is damaged" in err and "Traceback" not in err


def test_a_run_with_a_relative_data_path_resumes_from_anywhere(tmp_path, tree, monkeypatch, capsys):
    monkeypatch.chdir(tree.parent)
    common = ["--model", TINY, "--batch-size", "8", "--quiet"]
    assert main(["train", *common, "--data", "tree", "--max-steps", "2", "--out", "run"]) == 0
    recorded = json.loads((tree.parent / "run" / "config.json").read_text())
    assert recorded["data"]["spec"] == str(tree.resolve())  # recorded resolved, not as typed
    monkeypatch.chdir(tmp_path.parent)  # elsewhere, where "tree" means nothing
    run = str(tree.parent / "run")
    assert main(["train", "--resume", run, "--max-steps", "3", "--quiet"]) == 0
    # the same folder named another way is the same data, not a change of data
    assert main(["train", "--resume", run, "--max-steps", "4", "--data", str(tree), "--quiet"]) == 0
    assert json.loads((tree.parent / "run" / "summary.json").read_text())["steps"] == 4


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path, tree, capsys, monkeypatch):
    import errno

    from resnets.runs import checkpoint

    run = tmp_path / "run"
    common = ["--model", TINY, "--data", str(tree), "--batch-size", "8", "--quiet"]
    assert main(["train", *common, "--epochs", "1", "--out", str(run)]) == 0  # 6 steps, saved at step 6
    saved = load_file(run / "checkpoints" / "last.safetensors")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "safetensors_bytes", full)  # the weights cannot be written
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "step 6 is kept" in err
    kept = load_file(run / "checkpoints" / "last.safetensors")
    assert all(torch.equal(kept[k], saved[k]) for k in saved)
    assert not list((run / "checkpoints").glob(".*.staged"))
