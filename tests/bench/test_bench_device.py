"""``resnets bench --device``: the device reaches every case, the peak, the clock and the machine line; bad devices
are one line and exit 2. A GPU is played with monkeypatched torch.cuda calls, so this runs on any CPU; the real
CUDA run is tests/gpu/test_bench_cuda.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resnets import compute
from resnets.bench import suite, training
from resnets.bench.cases import Case, select_cases
from resnets.bench.machine import describe_machine, summary_line
from resnets.bench.results import Row
from resnets.bench.suite import Settings
from resnets.bench.training import TrainingPlan, bench_recipe, engine_rate
from resnets.cli import main
from resnets.compute import device_clock, measure_peak
from resnets.device import Precision, resolve_precision

CUDA = torch.device("cuda")


def play_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on torch says that a bf16-capable GPU is present (only what the bench asks of it)."""
    props = SimpleNamespace(name="Fake GPU", total_memory=80 * 2**30, major=9, minor=0, multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)


@pytest.mark.parametrize(
    ("device", "expected"), [("tpu0", "unknown device 'tpu0'"), ("mps", "device 'mps' is not supported")]
)
def test_an_unknown_device_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], device: str, expected: str
) -> None:
    assert main(["bench", "--device", device, "--cases", "train/resnet20"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and expected in captured.err and "cuda" in captured.err
    assert "peak" not in captured.out  # refused before anything was measured


def test_cuda_without_a_gpu_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so that it holds on a GPU machine too
    assert main(["bench", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU is available" in err and "--device cpu" in err


def test_auto_is_the_cpu_without_a_gpu_and_the_gpu_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Settings(device="auto").torch_device == torch.device("cpu")
    play_gpu(monkeypatch)
    assert Settings(device="auto").torch_device.type == "cuda"


def test_the_gpu_gets_the_larger_batch_of_cases_that_have_one(monkeypatch: pytest.MonkeyPatch) -> None:
    resnet20, train, infer = select_cases(["train/speedrun", "infer/speedrun", "train/resnet20"])  # table order
    cpu = Settings()
    assert (cpu.batch_for(train), cpu.batch_for(infer), cpu.batch_for(resnet20)) == (512, 512, 128)
    play_gpu(monkeypatch)
    gpu = Settings(device="cuda")
    assert (gpu.batch_for(train), gpu.batch_for(infer), gpu.batch_for(resnet20)) == (1024, 4096, 128)
    assert Settings(device="cuda", quick=True).batch_for(train) == 8  # smoke runs stay small everywhere


def test_memory_cases_are_cpu_only_and_say_so_on_a_gpu() -> None:
    speedrun, memory = select_cases(["memory/resnet1202", "train/speedrun"])  # table order
    assert memory.cpu_only and not speedrun.cpu_only
    precision = Precision(CUDA, amp=True, dtype=torch.bfloat16, channels_last=True)
    (row,) = suite.run_case(memory, Settings(), {"float32": 1e12}, precision)
    assert row.notes.startswith("skipped: CPU-only") and "--device cpu" in row.notes
    assert math.isnan(row.ours) and row.case == "memory/resnet1202"


def test_the_device_reaches_the_peak_the_cases_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    play_gpu(monkeypatch)
    peaks: list[tuple[torch.dtype, int | None, torch.device]] = []
    trained: list[tuple[str, int, torch.device]] = []

    def fake_peak(dtype: torch.dtype, size: int | None = None, device: torch.device | str = "cpu") -> float:
        peaks.append((dtype, size, torch.device(device)))
        return 1e14 if dtype == torch.bfloat16 else 5e13

    def fake_training(case: Case, plan: TrainingPlan, peaks: dict, macs: int, device: torch.device) -> list[Row]:
        trained.append((case.name, plan.batch, device))
        return [Row(case.name, "engine", "images/s", 1000.0, 3000.0, 0.4)]

    monkeypatch.setattr(suite, "measure_peak", fake_peak)
    monkeypatch.setattr(training, "run_training", fake_training)
    argv = ["bench", "--device", "cuda", "--quick", "--cases", "train/speedrun", "memory/resnet1202"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert peaks == [(torch.float32, 4096, CUDA), (torch.bfloat16, 4096, CUDA)]  # quick: half the GPU's 8192
    assert trained == [("train/speedrun", 8, CUDA)]
    table = capsys.readouterr().out
    assert "Fake GPU (80 GiB, compute capability 9.0" in table and "bfloat16 channels_last" in table
    assert "skipped: CPU-only" in table and "3.00x" in table
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["machine"]["device"] == "cuda" and data["machine"]["gpu"]["name"] == "Fake GPU"
    assert data["settings"]["device"] == "cuda" and data["peak_flops"] == {"float32": 5e13, "bfloat16": 1e14}
    assert data["command"].endswith("--quick --out " + str(tmp_path)) and "--device cuda" in data["command"]


def test_the_cpu_is_the_default_and_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().device == "cpu"
    machine = describe_machine(resolve_precision(torch.device("cpu"), None, None))
    assert machine["device"] == "cpu" and machine["gpu"] is None
    assert not summary_line(machine).startswith("Fake GPU") and "usable cores" in summary_line(machine)


def test_the_device_clock_waits_for_the_gpu_before_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"sync {device}"))

    def clock() -> float:
        events.append("read")
        return 7.0

    assert device_clock("cpu", clock) is clock  # the CPU's work is done when its call returns
    assert device_clock(CUDA, clock)() == 7.0
    assert events == ["sync cuda", "read"]


def test_the_peak_on_a_named_device_and_its_default_size(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(x / 2 for x in range(100))  # every reading of the clock is 0.5 s after the last
    peak = measure_peak(torch.float32, size=64, reps=2, rounds=3, clock=lambda: next(ticks), device="cpu")
    assert peak == pytest.approx(2 * 64**3 * 2 / 0.5)
    monkeypatch.setitem(compute.PEAK_SIZE, "cpu", 32)
    ticks = iter(x / 2 for x in range(100))
    assert measure_peak(reps=1, rounds=1, clock=lambda: next(ticks)) == pytest.approx(2 * 32**3 / 0.5)


def test_the_engine_rate_on_a_gpu_is_timed_around_the_device_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    trainer = SimpleNamespace(benchmark_steps=lambda steps: calls.append(f"{steps} steps") or 123.0)
    assert engine_rate(trainer, 3, 10, torch.device("cpu")) == 123.0  # the engine's own clock on the CPU
    readings = iter([100.0, 102.0])
    assert engine_rate(trainer, 3, 10, CUDA, clock=lambda: next(readings)) == 15.0  # 30 images in 2 s
    assert calls == ["3 steps", "sync", "3 steps", "sync"]


def test_the_speedrun_case_times_its_own_recipe() -> None:
    resnet20, case = select_cases(["train/speedrun", "train/resnet20"])  # table order
    plan = TrainingPlan(batch=16, steps=2, rounds=1, warmup=1, threads=1)
    recipe = bench_recipe(case, plan)
    assert recipe.name == "cifar10-speedrun" and (recipe.batch_size, recipe.max_steps, recipe.epochs) == (16, 4, None)
    assert (recipe.crop_padding, recipe.pad_mode, recipe.alternating_flip) == (2, "reflect", True)
    assert recipe.lookahead_every == 5 and recipe.lookahead_start_epochs == 0.0  # its cost is in the timed steps
    assert recipe.lr == training.LR and recipe.whiten_images == 5000
    default = bench_recipe(resnet20, plan)
    assert (default.name, default.crop_padding, default.lookahead_start_epochs) == ("default", 4, 3.0)
