"""``resnets train`` refuses bad values in one line naming key, value and expectation, and accepts good ones."""

from __future__ import annotations

import pytest
import yaml

from resnets.cli import main

#: (flag or --set text, key the message must name, value it must echo): each was accepted or crashed before.
REFUSED = [
    (["--epochs", "nan"], "--epochs must be", "nan"),
    (["--threads", "-1"], "--threads must be", "-1"),
    (["--threads", "0"], "--threads must be", "0"),
    (["--seed", str(2**70)], "--seed must be", str(2**70)),
    (["--seed", "-1"], "--seed must be", "-1"),
    (["--set", "eval_every=0"], "eval_every", "0"),
    (["--set", "crop_padding=-1"], "crop_padding", "-1"),
    (["--batch-size", "0"], "--batch-size must be", "0"),  # named by the flag typed, not the config key
    (["--max-steps", "-5"], "--max-steps must be", "-5"),
    (["--epochs", "0"], "--epochs must be", "0.0"),
    (["--lr", "nan"], "--lr must be", "nan"),
    (["--lr", "inf"], "--lr must be", "inf"),
    (["--set", "warmup_start_factor=-1"], "warmup_start_factor", "-1.0"),
    (["--val-fraction", "1.5"], "--val-fraction must be", "1.5"),
    (["--val-size", "-3"], "--val-size must be", "-3"),
    (["--snapshot-every", "-1"], "--snapshot-every must be", "-1"),
    (["--set", "learning_rate=0.1"], "learning_rate", "valid keys"),
    (["--set", "warmup_epoch=1"], "warmup_epoch", "did you mean warmup_epochs or"),
    (["--set", "lr=abc"], "lr", "'abc'"),
    (["--set", "epochs=[1]"], "epochs", "[1]"),
    (["--set", "epochs=None"], "epochs", "None"),  # the default recipe has no max_steps to stop at
]


@pytest.mark.parametrize(("argv", "key", "value"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_bad_value_is_one_line_naming_it(argv, key, value, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data", str(tmp_path / "never-read"), "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert key in err and value in err and ("must be" in err or "valid keys" in err or "did you mean" in err), err
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused value"


def _printed(capsys, *argv: str) -> dict:
    assert main(["train", "--print-config", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_lr_1e_3_is_a_number_on_the_command_line_and_in_yaml(tmp_path, capsys) -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; Python's float() reads it as a number, and so do we.
    assert _printed(capsys, "--set", "lr=1e-3")["recipe"]["lr"] == 1e-3
    path = tmp_path / "my.yaml"
    path.write_text("lr: 1e-3\nmax_steps: '200'\n")
    printed = _printed(capsys, "--config", str(path))
    assert printed["recipe"]["lr"] == 1e-3 and printed["recipe"]["max_steps"] == 200


def test_epochs_none_works_like_null_when_max_steps_stops_the_run(capsys) -> None:
    printed = _printed(capsys, "--set", "epochs=None", "--max-steps", "7")
    assert printed["recipe"]["epochs"] is None and printed["recipe"]["max_steps"] == 7


@pytest.mark.parametrize(
    ("text", "key"),
    [("lr: .nan\n", "lr"), ("lr: abc\n", "lr"), ("seed: -1\n", "seed"), ("nosuch: 1\n", "'nosuch'")],
)
def test_config_file_errors_name_the_file(text, key, tmp_path, capsys) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert f"in {path}" in err and key in err and "command line" not in err, err


def test_a_flag_over_the_file_is_blamed_on_the_command_line(tmp_path, capsys) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("lr: 0.1\n")
    assert main(["train", "--config", str(path), "--lr", "nan", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "error: --lr must be a finite number > 0, got nan" in err and str(path) not in err  # the flag, by name


def test_recipe_flag_keeps_the_files_recipe_values(tmp_path, capsys) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("recipe: {name: fast, lr: 0.03}\n")
    printed = _printed(capsys, "--config", str(path), "--recipe", "he2015-cifar")
    assert printed["recipe"]["name"] == "he2015-cifar" and printed["recipe"]["lr"] == 0.03


def test_broken_yaml_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("lr: [1,\n")
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot be parsed" in err, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A real two-step resnet20 run on 8x8 grey images, and one of its images."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny-run")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / "data" / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(
                    root / "data" / split / label / f"{i}.png"
                )
    argv = ["--data", str(root / "data"), "--out", str(root / "run"), "--max-steps", "2", "--batch-size", "4"]
    assert main(["train", "--model", "resnet20", *argv, "--device", "cpu", "--quiet"]) == 0
    return root / "run", root / "data" / "test" / "a" / "0.png"


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_device_cuda_without_a_gpu_is_one_line(command, tiny_run, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    run, image = tiny_run
    argv = [command, str(run), *([str(image)] if command == "predict" else []), "--device", "cuda"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"resnets {command}: error: --device cuda was given but no CUDA GPU is available; use --device cpu\n"
