"""What `resnets train` shows: the pre-run banner, the whole-run ETA, and plain log lines when stderr is a file."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

from resnets.data import ArrayDataset, DataBundle
from resnets.device import Precision, cpu_has_native_bf16, resolve_precision
from resnets.errors import ConfigError
from resnets.models import create_model
from resnets.train import TrainConfig, apply_overrides, resume_config, train
from resnets.train.banner import banner_lines
from resnets.train.progress import (
    REFRESH_STEPS,
    Progress,
    auto_log_every,
    evaluations_left,
    format_duration,
    run_eta_s,
)
from resnets.train.state import RunCounters

from .conftest import TINY, tiny_bundle, tiny_config

CPU = torch.device("cpu")


def _resnet20_params(in_channels: int, classes: int) -> int:
    """By hand: a 3x3 stem, 3 stages of 3 basic blocks (two 3x3 convs and two BNs each; option A shortcuts
    have no weights), a linear head."""

    def block(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout

    stem = 9 * in_channels * 16 + 2 * 16
    stages = 3 * block(16, 16) + block(16, 32) + 2 * block(32, 32) + block(32, 64) + 2 * block(64, 64)
    return stem + stages + 64 * classes + classes


def _bundle(train: int, val: int, test: int) -> DataBundle:
    def split(n: int) -> ArrayDataset:
        return ArrayDataset(torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))

    classes = [str(i) for i in range(10)]
    return DataBundle("fashion-mnist", "image", classes, split(train), split(test), split(val), (0.3,), (0.3,), True)


def _resnet20_banner(
    config: TrainConfig,
    bundle: DataBundle,
    *,
    steps_per_epoch: int,
    last_step: int,
    run_dir: str,
    precision: Precision | None = None,
    **more: int,
) -> list[str]:
    """The banner of resnet20 on 1-channel, 10-class data on a 2-thread CPU (fp32 unless ``precision`` says)."""
    return banner_lines(
        config,
        model=create_model("resnet20", num_classes=10, in_channels=1),
        bundle=bundle,
        layout="image",
        precision=precision or resolve_precision(CPU, False, None),
        device_name="cpu (2 threads)",
        steps_per_epoch=steps_per_epoch,
        last_step=last_step,
        run_dir=run_dir,
        **more,
    )


def test_banner_lines_of_a_known_config(play_cpu) -> None:
    play_cpu(native_bf16=True)  # amp=false must win over the CPU
    config = apply_overrides(TrainConfig(model="resnet20", amp=False), {"recipe": "fast", "warmup_epochs": 0.5})
    lines = _resnet20_banner(
        config,
        _bundle(train=50, val=10, test=20),
        steps_per_epoch=390,
        last_step=3900,
        run_dir="runs/x",
        precision=resolve_precision(CPU, config.amp, None),
        resume_step=780,
    )
    assert lines == [
        f"model     resnet20: {_resnet20_params(1, 10):,} parameters",  # 269,434
        "data      fashion-mnist: 50 train / 10 val / 20 test, 10 classes, samples 1x28x28",
        "device    cpu (2 threads); fp32: --no-amp (amp=false); channels_last",
        "recipe    fast: sgd nesterov lr 0.2 momentum 0.9 weight decay 0.0005, batch 128",
        "schedule  cosine to 0, warm-up 0.5 epochs (195 steps) from 0.1 x lr, label smoothing 0.1",
        "length    3,900 steps = 10 epochs of 390 steps; evaluated every epoch",
        "augment   random crop (pad 4), flip",
        "run dir   runs/x",
        "resuming at step 780 of 3,900",
    ]


def test_banner_of_a_step_schedule_cut_by_max_steps_on_two_processes() -> None:
    config = apply_overrides(
        TrainConfig(model="resnet20", channels_last=False),
        {"recipe": "he2015-cifar", "max_steps": 500, "augment": False, "eval_every": 2},
    )
    lines = _resnet20_banner(
        config,
        _bundle(train=50, val=0, test=20),
        steps_per_epoch=200,
        last_step=500,
        run_dir="runs/y",
        precision=resolve_precision(CPU, False, config.channels_last),
        world_size=2,
    )
    assert lines[2] == "device    cpu (2 threads); fp32: --no-amp (amp=false); NCHW"
    assert (
        lines[3] == "recipe    he2015-cifar: sgd lr 0.1 momentum 0.9 weight decay 0.0001, batch 128 x 2 processes = 256"
    )
    # resnet20 has 20 weighted layers, fewer than the 110 of the paper's deep warm-up: no warm-up line
    assert lines[4] == "schedule  step, x0.1 at steps 32,000, 48,000, no warm-up, label smoothing 0"
    assert lines[5] == "length    500 steps = 2.5 epochs of 200 steps (max_steps); evaluated every 2 epochs"
    # the run stops long before the paper's milestones: the lr never leaves its peak
    assert (
        lines[6] == "last lr   0.1 at step 500, the run's last; the milestones at steps 32,000, 48,000 are not reached"
    )
    assert lines[7] == "augment   none"
    assert len(lines) == 9  # no resume line on a new run


def test_banner_shows_names_from_files_and_folders_escaped() -> None:
    from dataclasses import replace

    config = apply_overrides(TrainConfig(model="resnet20"), {"warmup_epochs": 0})
    bundle = replace(
        _bundle(train=50, val=0, test=20),
        name="/data/x\x1b[2J",
        identity="an image folder tree (its folder is named\nfake line)",
    )
    lines = _resnet20_banner(
        config,
        bundle,
        steps_per_epoch=10,
        last_step=20,
        run_dir="runs/\u202eevil",
    )
    assert lines[1].startswith("data      /data/x\\x1b[2J: 50 train")
    assert lines[2] == "          an image folder tree (its folder is named\\x0afake line)"
    assert lines[-1] == "run dir   runs/\\u202eevil"
    assert all(line.isprintable() for line in lines)


def test_banner_says_what_the_data_was_taken_to_be() -> None:
    from dataclasses import replace

    config = apply_overrides(
        TrainConfig(model="resnet20"), {"schedule": "linear", "final_lr_factor": 0.05, "warmup_epochs": 0}
    )
    bundle = replace(
        _bundle(train=50, val=0, test=20), identity="Fashion-MNIST (recognised by content: mean pixel 0.286)"
    )
    lines = _resnet20_banner(
        config,
        bundle,
        steps_per_epoch=10,
        last_step=20,
        run_dir="runs/z",
    )
    assert lines[1].startswith("data      fashion-mnist: 50 train")
    assert lines[2] == "          Fashion-MNIST (recognised by content: mean pixel 0.286)"
    assert lines[3].startswith("device    ") and len(lines) == 10
    assert lines[5] == "schedule  linear to 0.05 x lr, no warm-up, label smoothing 0.1"
    # 20 of the default recipe's 6 x 10 steps: 0.2 - (0.2 - 0.01) * 19 / 60 at the last step
    assert lines[7] == (
        "last lr   0.14 at step 20, the run's last; the linear reaches 0.01 at step 60 "
        "(--max-steps without --epochs fits it to the run)"
    )


@pytest.mark.parametrize(
    ("device", "native_bf16", "amp", "expected"),
    [
        ("cpu", False, None, "fp32: this CPU has no native bf16 (no AVX512-BF16/AMX)"),
        ("cpu", True, None, "bf16 autocast: this CPU has native bf16 (AVX512-BF16/AMX)"),
        ("cpu", True, False, "fp32: --no-amp (amp=false)"),
        (
            "cpu",
            False,
            True,
            (
                "bf16 autocast: amp=true, though this CPU has no native bf16 (no AVX512-BF16/AMX): emulated, "
                "slower than fp32"
            ),
        ),
        ("cuda", True, None, "bf16 autocast: CUDA with bf16"),
        ("cuda", False, None, "fp16 autocast: CUDA without bf16 (fp16 with a grad scaler)"),
    ],
)  # every branch, whatever this machine has: with the switch unset, resolve_precision reads only these two probes
def test_precision_says_why(monkeypatch, device, native_bf16, amp, expected) -> None:
    monkeypatch.delenv("RESNETS_NATIVE_BF16")  # the CPU decides
    monkeypatch.setattr("resnets.device.cpu_flags_have_bf16", lambda: native_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: native_bf16)
    precision = resolve_precision(torch.device(device), amp, None)
    assert precision.describe() == expected
    assert precision.needs_scaler == (device == "cuda" and not native_bf16)


@pytest.mark.parametrize(
    ("value", "cpu_flags", "amp", "native", "expected"),
    [
        ("1", False, None, True, "bf16 autocast: RESNETS_NATIVE_BF16=1 plays a CPU with native bf16"),
        ("0", True, None, False, "fp32: RESNETS_NATIVE_BF16=0 plays a CPU without native bf16"),
        (
            "no",
            True,
            True,
            False,
            (
                "bf16 autocast: amp=true, though RESNETS_NATIVE_BF16=no plays a CPU without native bf16: emulated, "
                "slower than fp32"
            ),
        ),
        ("auto", True, None, True, "bf16 autocast: this CPU has native bf16 (AVX512-BF16/AMX)"),
        ("Auto", False, None, False, "fp32: this CPU has no native bf16 (no AVX512-BF16/AMX)"),
    ],
)
def test_the_switch_overrides_the_cpu_and_says_so(monkeypatch, value, cpu_flags, amp, native, expected) -> None:
    monkeypatch.setenv("RESNETS_NATIVE_BF16", value)
    monkeypatch.setattr("resnets.device.cpu_flags_have_bf16", lambda: cpu_flags)
    assert resolve_precision(CPU, amp, None).describe() == expected
    assert cpu_has_native_bf16() is native


def test_a_switch_value_that_is_not_understood_is_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RESNETS_NATIVE_BF16", "maybe")
    with pytest.raises(
        ConfigError, match=r"RESNETS_NATIVE_BF16='maybe' is not understood; expected 1 .*, 0 .* or auto"
    ):
        cpu_has_native_bf16()


def test_precision_built_without_a_reason_still_works_and_compares_equal() -> None:
    plain = Precision(CPU, amp=False, dtype=torch.bfloat16, channels_last=True)
    assert plain.describe() == "fp32" and plain.reason == ""
    assert plain == Precision(CPU, amp=False, dtype=torch.bfloat16, channels_last=True, reason="--no-amp")


def test_whole_run_eta_formula() -> None:
    assert run_eta_s(steps_left=100, step_s=0.5, evals_left=2, eval_s=3.0) == 56.0
    assert run_eta_s(steps_left=100, step_s=0.5, evals_left=2, eval_s=None) == 50.0  # no evaluation timed yet
    assert [format_duration(s) for s in (0, 45.4, 552, 7500, 90061)] == ["0s", "45s", "9m12s", "2h05m", "25h01m"]


def _evaluations_by_simulation(step: int, last_step: int, steps_per_epoch: int, eval_every: int) -> int:
    """The engine's rule, step by step: evaluate at an epoch end every eval_every epochs or at the last step,
    and once more at the last step when it falls inside an epoch. Counts the evaluations at steps >= step."""
    evaluations = []
    for s in range(1, last_step + 1):
        if s % steps_per_epoch == 0 and ((s // steps_per_epoch) % eval_every == 0 or s >= last_step):
            evaluations.append(s)
    if last_step % steps_per_epoch:
        evaluations.append(last_step)
    return sum(s >= step for s in evaluations)


def test_evaluations_left_follows_the_engine() -> None:
    assert evaluations_left(0, 12, 6, 1) == 2
    assert evaluations_left(6, 12, 6, 1) == 2  # the update of step 6 comes before its evaluation
    assert evaluations_left(7, 12, 6, 1) == 1
    assert evaluations_left(0, 20, 6, 2) == 2  # epoch 2 (step 12) and the stop at step 20
    for spe in (1, 3, 6):
        for last in (1, 5, 6, 12, 13, 20):
            for every in (1, 2, 3):
                for step in range(last + 1):
                    assert evaluations_left(step, last, spe, every) == _evaluations_by_simulation(
                        step, last, spe, every
                    )


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _step(progress: Progress, state: RunCounters, clock: _FakeClock, seconds: float) -> None:
    clock.now += seconds
    state.step, state.batch = state.step + 1, state.batch + 1
    state.seen += 10
    state.epoch_time_s += seconds
    state.loss_sum += 0.5 * 10
    state.errors += 3
    progress.update(state, 0.1)


def test_log_lines_carry_the_measured_whole_run_eta(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(False, steps_per_epoch=10, last_step=40, log_every=5)
    clock = progress.clock.clock = _FakeClock()
    state = RunCounters()
    progress.start_epoch(0, 0)
    for _ in range(10):
        _step(progress, state, clock, 0.5)  # 0.5 s per step
    progress.close()
    clock.now += 3.0  # the evaluation and checkpoint at the end of epoch 1
    progress.write_epoch(
        {"epoch": 1, "train_loss": 0.5, "train_error": 30.0, "test_error": 20.0, "images_per_s": 20, "epoch_time_s": 5}
    )
    state.epoch, state.batch = 1, 0
    state.start_epoch()
    progress.start_epoch(1, 0)
    for _ in range(5):
        _step(progress, state, clock, 0.5)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "step 5/40 (epoch 1/4) loss 0.500 err 30.0% lr 0.1 20 img/s eta 18s",  # 35 steps x 0.5 s, no eval timed
        "step 10/40 (epoch 1/4) loss 0.500 err 30.0% lr 0.1 20 img/s eta 15s",
        "epoch 1: train loss 0.5000 error 30.00% | test error 20.00% | 20 img/s, 5 s",
        "step 15/40 (epoch 2/4) loss 0.500 err 30.0% lr 0.1 20 img/s eta 22s",  # 25 x 0.5 + 3 evals x 3 s = 21.5
    ]


def test_a_terminal_gets_a_bar_with_the_run_eta_and_no_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress(False, steps_per_epoch=20, last_step=40, log_every=1)
    clock = progress.clock.clock = _FakeClock()
    state = RunCounters()
    progress.start_epoch(0, 0)
    for _ in range(REFRESH_STEPS):
        _step(progress, state, clock, 0.25)
    progress.close()
    shown = terminal.getvalue()
    assert "epoch 1/2" in shown and "run eta 8s" in shown  # 30 steps x 0.25 s = 7.5 s
    assert "step 1/40" not in shown  # a terminal gets the bar, not the plain lines


def test_log_every_is_checked_and_chosen_from_the_epoch_length() -> None:
    with pytest.raises(ConfigError, match=r"log_every must be an integer >= 1, or null, got 0"):
        apply_overrides(TrainConfig(), {"log_every": 0})
    assert apply_overrides(TrainConfig(), {"log_every": "25"}).log_every == 25
    assert [auto_log_every(n) for n in (1, 6, 468, 1000, 10_009)] == [1, 1, 24, 50, 50]


def test_a_run_logging_to_a_file_prints_the_banner_then_a_line_every_n_steps(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], play_cpu
) -> None:
    play_cpu(native_bf16=False)
    monkeypatch.setattr("resnets.train.engine._plot", lambda *args, **kwargs: None)  # curves.png: not shown here
    run = tmp_path / "run"
    config = apply_overrides(tiny_config(run, max_steps=4), {"quiet": False, "log_every": 2})
    train(config, data=tiny_bundle())
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar: stderr is not a terminal here
    lines = err.splitlines()
    params = sum(p.numel() for p in create_model(TINY, num_classes=2, in_channels=1).parameters())
    assert lines[:3] == [
        f"model     {TINY}: {params:,} parameters",
        "data      tiny: 96 train / 0 val / 32 test, 2 classes, samples 1x8x8",
        "device    cpu (1 thread); fp32: RESNETS_NATIVE_BF16=0 plays a CPU without native bf16; channels_last",
    ]
    assert lines[5] == "length    4 steps = 0.6667 epochs of 6 steps (max_steps); evaluated every epoch"
    # tiny_config's 2 epochs set the cosine's horizon (12 steps); the run stops at 4, just past the warm-up
    assert lines[6] == (
        "last lr   0.05 at step 4, the run's last; the cosine reaches 0 at step 12 "
        "(--max-steps without --epochs fits it to the run)"
    )
    assert lines[8] == f"run dir   {run}"
    steps = [
        re.match(r"step (\d+)/(\d+) \(epoch (\d+)/(\d+)\) loss \S+ err \S+% lr \S+ \d+ img/s eta \S+$", x)
        for x in lines
    ]
    assert [m.groups() for m in steps if m] == [("2", "4", "1", "1"), ("4", "4", "1", "1")]

    assert resume_config(run).log_every is None  # how a session reports is its own, like quiet and threads
    resumed = resume_config(run, {"max_steps": None, "log_every": 2})  # on to the recipe's 2 epochs: 12 steps
    train(resumed, data=tiny_bundle(), resume=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[8] == "resuming at step 4 of 12"
    steps = [re.match(r"step (\d+)/12 \(epoch (\d)/2\)", x) for x in lines]
    assert [m.groups() for m in steps if m] == [("6", "1"), ("8", "2"), ("10", "2"), ("12", "2")]
    epochs = [x.split(":")[0] for x in lines if x.startswith("epoch ")]
    assert epochs == ["epoch 1", "epoch 2"]
