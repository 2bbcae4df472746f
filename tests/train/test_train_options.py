"""The run options that change how a step is computed but not what it computes: grad_checkpointing, compile."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from resnets.cli import build_parser
from resnets.cli.train import overrides_from_args
from resnets.errors import ConfigError
from resnets.layers.checkpointing import checkpoint_module
from resnets.train import TrainConfig, apply_overrides, train

from .conftest import tiny_config

#: Stochastic depth on, so that the recomputation must also draw the same masks as the first pass.
DROP_PATH = {"model_options": {"drop_path_rate": 0.3}}


def _losses(run) -> list[float]:
    lines = (run / "steps.csv").read_text().splitlines()
    column = lines[0].split(",").index("loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


def _test_losses(run) -> list[float]:
    return [json.loads(line)["test_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_grad_checkpointing_trains_the_same_run(tmp_path, bundle, monkeypatch):
    """Same step losses, the same test losses (which read BN's running statistics) and the same final weights."""
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    train(tiny_config(plain, **DROP_PATH), data=bundle)
    calls: list[int] = []

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return checkpoint_module(*args)

    monkeypatch.setattr("resnets.layers.skip_unit.checkpoint_module", counted)
    train(tiny_config(checkpointed, grad_checkpointing=True, **DROP_PATH), data=bundle)
    assert len(_losses(plain)) == 12
    assert len(calls) == 12 * 2  # every training step, both residual units of the tiny ResNet
    torch.testing.assert_close(_losses(checkpointed), _losses(plain), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_test_losses(checkpointed), _test_losses(plain), rtol=1e-6, atol=1e-7)
    before, after = (load_file(run / "checkpoints" / "last.safetensors") for run in (plain, checkpointed))
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-6, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")
    assert json.loads((checkpointed / "config.json").read_text())["train"]["grad_checkpointing"] is True


def test_flags_reach_the_config() -> None:
    def config(*argv: str) -> TrainConfig:
        args = build_parser().parse_args(["train", *argv])
        return apply_overrides(TrainConfig(), overrides_from_args(args), "the command line")

    plain = config()
    assert plain.grad_checkpointing is False and plain.compile is False
    both = config("--grad-checkpointing", "--compile")
    assert both.grad_checkpointing is True and both.compile is True
    assert config("--set", "grad_checkpointing=true").grad_checkpointing is True
    with pytest.raises(ConfigError, match="compile .* must be bool"):
        config("--set", "compile=fast")


def test_compile_without_a_compiler_is_one_config_error(tmp_path, bundle, monkeypatch):
    """Refused before the run starts, naming what is missing and both ways out; no run directory is left."""
    monkeypatch.setattr("resnets.train.compiling.find_cpp_compiler", lambda: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler") as error:
        train(tiny_config(tmp_path / "run", compile=True), data=bundle)
    message = str(error.value)
    assert "install" in message and "without --compile" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.pinned_precision("both runs train in fp32 (amp=False)")
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_run_matches_the_eager_run_and_saves_plain_keys(tmp_path, bundle):
    """Inductor fuses and reorders float operations, so losses agree closely, not bit for bit."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(tiny_config(eager, epochs=1, amp=False), data=bundle)
    train(tiny_config(compiled, epochs=1, amp=False, compile=True), data=bundle)
    torch.testing.assert_close(_losses(compiled), _losses(eager), rtol=1e-3, atol=1e-5)
    keys = set(load_file(compiled / "checkpoints" / "last.safetensors"))
    assert keys == set(load_file(eager / "checkpoints" / "last.safetensors"))
    assert not [key for key in keys if "_orig_mod" in key]
