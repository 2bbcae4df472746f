"""The benchmark suite: its arithmetic (FLOPs, peak, medians, ratios), its reports, its errors, and a smoke run."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.bench.cases import CASES, select_cases
from resnets.bench.memory import MemoryPlan, _rows, estimate_need, saved_bytes
from resnets.bench.report import format_table, to_markdown, write_report
from resnets.bench.results import Row, skipped
from resnets.bench.suite import BenchResult, Settings, _macs
from resnets.bench.timing import alternate, median, rate
from resnets.cli import main
from resnets.compute import matmul_flops, measure_peak, peak_share
from resnets.errors import UnknownNameError


def conv_macs(c_in: int, c_out: int, side: int, kernel: int = 3) -> int:
    """Multiply-adds of a convolution producing a side x side map: one kernel-sized dot product per output."""
    return side * side * c_out * c_in * kernel * kernel


def resnet20_macs_by_hand() -> int:
    """He et al. (2015) sec. 4.2: a 3x3 stem to 16 channels, three stages of 3 basic blocks (two 3x3 convs
    each) at 16/32/64 channels on 32/16/8 pixels, option-A (parameter-free) shortcuts, a 64 -> 10 classifier."""
    total = conv_macs(3, 16, 32)
    for width, side, c_in in ((16, 32, 16), (32, 16, 16), (64, 8, 32)):
        total += conv_macs(c_in, width, side) + 5 * conv_macs(width, width, side)  # 3 blocks x 2 convs
    return total + 64 * 10


def test_training_flops_of_resnet20_match_a_count_by_hand() -> None:
    assert resnet20_macs_by_hand() == 40_551_040  # 40.55M MACs
    case = select_cases(["train/resnet20"])[0]
    assert _macs(case) == 40_551_040
    assert case.flop_factor * _macs(case) == 243_306_240  # forward + backward: 6 x MACs per image
    assert select_cases(["infer/resnet56-b256"])[0].flop_factor == 2


def test_peak_share_of_a_known_rate() -> None:
    # 1000 images/s of resnet20 training is 243.3 GFLOP/s, half of a 486.6 GFLOP/s machine.
    assert peak_share(243_306_240, 1000.0, 486_612_480_000) == pytest.approx(0.5)
    assert math.isnan(peak_share(243_306_240, math.nan, 1e12))


def test_matmul_flops_and_the_peak_on_a_fake_clock() -> None:
    assert matmul_flops(3) == 54  # 9 outputs, 3 multiplies and 3 adds each
    assert matmul_flops(2048) == 2 * 2048**3
    ticks = itertools.count(0.0, 0.5)  # every reading of the clock is 0.5 s after the last
    peak = measure_peak(torch.float32, size=64, reps=2, rounds=3, clock=lambda: next(ticks))
    assert peak == pytest.approx(2 * 64**3 * 2 / 0.5)


def test_the_measured_peak_is_positive_and_finite() -> None:
    peak = measure_peak(torch.float32, size=256, reps=2, rounds=2)
    assert math.isfinite(peak) and peak > 1e6  # even one slow core does more than a MFLOP/s


def test_rate_reads_the_clock_around_the_work() -> None:
    readings = iter([10.0, 12.0])
    assert rate(lambda: 50, clock=lambda: next(readings)) == 25.0


def test_rounds_alternate_and_the_median_gives_the_ratio() -> None:
    order: list[str] = []
    baseline_rates, ours_rates = iter([5.0, 100.0, 4.0]), iter([10.0, 11.0, 1.0])

    def contender(name: str, rates):
        def run() -> float:
            order.append(name)
            return next(rates)

        return run

    rates = alternate({"baseline": contender("b", baseline_rates), "ours": contender("o", ours_rates)}, rounds=3)
    assert order == ["b", "o", "o", "b", "b", "o"]  # the order flips every other round
    assert rates == {"baseline": [5.0, 100.0, 4.0], "ours": [10.0, 11.0, 1.0]}
    row = Row("train/resnet20", "engine", "images/s", median(rates["baseline"]), median(rates["ours"]))
    assert (row.baseline, row.ours, row.ratio) == (5.0, 10.0, 2.0)  # one outlier round each changes nothing
    assert math.isnan(skipped("infer/resnet50-b1", "compiled", "images/s", "no compiler").ratio)


def test_case_selection_by_name_and_glob() -> None:
    assert [c.name for c in select_cases(["train/*"])] == [
        "train/resnet20",
        "train/resnet56",
        "train/resnet110",
        "train/resnet50",
        "train/speedrun",
    ]
    assert [c.name for c in select_cases(["*speedrun*"])] == ["train/speedrun", "infer/speedrun"]
    assert [c.name for c in select_cases(["*resnet50*", "infer/resnet50-b1"])] == [
        "train/resnet50",
        "infer/resnet50-b1",
        "infer/resnet50-b32",
    ]
    assert len(select_cases(None)) == len(CASES) == 11
    with pytest.raises(UnknownNameError, match="train/resnet20"):
        select_cases(["train/resnet21"])


def test_quick_settings_are_small() -> None:
    quick, full = Settings(quick=True), Settings()
    case = select_cases(["memory/resnet1202"])[0]
    assert (quick.effective_rounds, quick.steps_for(case), quick.batch_for(case)) == (1, 2, 4)
    assert (full.effective_rounds, full.batch_for(case)) == (5, 128)
    assert Settings(memory_batch=16).batch_for(case) == 16


def test_unknown_case_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cases", "train/resnet21"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'train/resnet21'; did you mean train/resnet20" in err  # a typo: the likely names
    assert main(["bench", "--cases", "zzz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1  # nothing close: every case
    assert "'zzz'; expected one of:" in err and all(case.name in err for case in CASES)


def _fake_result() -> BenchResult:
    machine = {
        "cpu": "Test CPU",
        "flags": {"avx2": True, "avx512f": False},
        "usable_cores": 2,
        "torch": torch.__version__,
        "threads": 2,
        "precision": {"amp": False, "dtype": "float32", "channels_last": True},
    }
    rows = [Row(case.name, "ours", "images/s", 100.0, 150.0 + i, 0.25) for i, case in enumerate(CASES)]
    rows.append(skipped("infer/resnet50-b1", "compiled", "images/s", "no C++ compiler"))
    return BenchResult(machine, {"rounds": 5}, {"float32": 1e11}, rows, 12.0)


def test_json_and_markdown_hold_every_case(tmp_path) -> None:
    result = _fake_result()
    json_path, md_path = write_report(result, "resnets bench --rounds 5", tmp_path)
    data = json.loads(json_path.read_text())
    assert {row["case"] for row in data["rows"]} == {case.name for case in CASES}
    assert data["rows"][0]["ratio"] == 1.5 and data["rows"][0]["peak_fraction"] == 0.25
    assert data["rows"][-1]["baseline"] is None  # nan is null: the file is strict JSON
    assert data["peak_flops"] == {"float32": 1e11} and data["command"] == "resnets bench --rounds 5"
    markdown = md_path.read_text()
    assert "resnets bench --rounds 5" in markdown
    for case in CASES:
        assert f"| {case.name} [ours] | 100 | 1" in markdown
    assert "skipped: no C++ compiler" in markdown and markdown == to_markdown(result, "resnets bench --rounds 5")
    table = format_table(result)
    assert "1.50x" in table and "25.0%" in table and "Test CPU" in table


def test_saved_bytes_count_activations_once_and_no_weights() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    # Linear keeps its input (2 x 8 floats; its weight is a parameter), ReLU its output (2 x 16 floats).
    assert saved_bytes(model, torch.randn(2, 8)) == (2 * 8 + 2 * 16) * 4


def test_memory_rows_turn_reports_into_ratios() -> None:
    case = select_cases(["memory/resnet1202"])[0]
    plan = memory_plan(batch=128)
    reports = {
        "baseline": {"peak_bytes": 1000 * 2**20, "live_peak_bytes": 800 * 2**20, "step_s": 2.0},
        "ours": {"peak_bytes": 250 * 2**20, "live_peak_bytes": 100 * 2**20, "step_s": 2.6},
    }
    live, memory, step = _rows(case, plan, {"float32": 1e12}, 10**9, reports, 2**34)
    assert (live.baseline, live.ours, live.ratio) == (800.0, 100.0, 0.125) and "1/8.0 of the memory" in live.notes
    assert (memory.baseline, memory.ours, memory.ratio) == (1000.0, 250.0, 0.25)
    assert "1/4.0 of the memory" in memory.notes
    assert step.ratio == pytest.approx(1.3) and "1.30x the time" in step.notes
    assert step.peak_fraction == pytest.approx(6 * 10**9 * 128 / 2.6 / 1e12)
    reports["baseline"] = {"error": "needs ~30.0 GiB by estimate"}
    _, memory, _ = _rows(case, plan, {"float32": 1e12}, 10**9, reports, 2**34)
    assert math.isnan(memory.ratio) and "without checkpointing: needs ~30.0 GiB" in memory.notes


def memory_plan(batch: int) -> MemoryPlan:
    return MemoryPlan(batch=batch, steps=1, threads=1)


def test_memory_variants_too_big_for_the_machine_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from resnets.bench import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)  # 1 MiB free: nothing fits
    monkeypatch.setattr(memory, "measure", lambda *a: pytest.fail("a child was started"))
    case = replace(select_cases(["memory/resnet1202"])[0], model="resnet20")
    rows = memory.run_memory(case, memory_plan(batch=64), {"float32": 1e11})
    assert all(math.isnan(row.baseline) and math.isnan(row.ours) for row in rows)
    assert "lower --memory-batch" in rows[0].notes
    estimate = rows[0].details["variants"]["baseline"]["estimate_bytes"]
    assert estimate == estimate_need(create_model("resnet20"), case, 64)


@pytest.mark.slow
def test_memory_children_measure_what_checkpointing_saves() -> None:
    from resnets.bench.memory import measure

    case = replace(select_cases(["memory/resnet1202"])[0], model="resnet56")
    plain, checkpointed = (measure(case, memory_plan(batch=32), flag) for flag in (False, True))
    assert "error" not in plain and "error" not in checkpointed, (plain, checkpointed)
    estimate = estimate_need(create_model("resnet56"), case, 32)  # ~170 MB
    assert 0.5 * estimate < plain["peak_bytes"] < 2 * estimate
    assert checkpointed["peak_bytes"] < 0.8 * plain["peak_bytes"]
    assert plain["step_s"] > 0 and checkpointed["step_s"] > 0
    # With the allocator's threshold pinned, RSS follows the live tensors: checkpointing keeps each unit's
    # input instead of its ~4 inner activations (3.8x fewer saved bytes, counted in tests/layers).
    live = [measure(case, memory_plan(batch=32), flag, pinned=True)["peak_bytes"] for flag in (False, True)]
    assert live[1] < 0.5 * live[0]


@pytest.mark.slow
def test_quick_run_writes_finite_positive_numbers(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = ["train/resnet20", "train/speedrun", "infer/resnet56-b256"]
    argv = ["bench", "--quick", "--device", "cpu", "--cases", *cases, "--no-compile", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train/resnet20 [engine]" in out and "infer/resnet56-b256 [folded]" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["peak_flops"]["float32"] > 0
    assert data["machine"]["threads"] == 1 and data["settings"]["quick"] is True
    assert (data["machine"]["device"], data["machine"]["gpu"], data["settings"]["device"]) == ("cpu", None, "cpu")
    measured = {(row["case"], row["variant"]): row for row in data["rows"]}
    assert set(measured) == {
        ("train/resnet20", "engine"),
        ("train/resnet20", "compiled"),
        ("train/speedrun", "engine"),
        ("train/speedrun", "compiled"),
        ("infer/resnet56-b256", "folded"),
        ("infer/resnet56-b256", "compiled"),
    }
    for key in (("train/resnet20", "engine"), ("train/speedrun", "engine"), ("infer/resnet56-b256", "folded")):
        row = measured[key]
        for field in ("baseline", "ours", "ratio", "peak_fraction"):
            assert math.isfinite(row[field]) and row[field] > 0, (key, field, row[field])
        assert row["peak_fraction"] < 1.5  # a share of the peak, not a rate
    assert measured[("infer/resnet56-b256", "compiled")]["ours"] is None
    assert measured[("train/resnet20", "compiled")]["ours"] is None
    assert measured[("train/resnet20", "engine")]["details"]["flops_per_image"] == 243_306_240
    speedrun = measured[("train/speedrun", "engine")]["details"]
    assert speedrun["recipe"] == "cifar10-speedrun" and speedrun["flops_per_image"] == 6 * 118_147_360
    assert (tmp_path / "bench.md").read_text().count("train/resnet20") >= 1
