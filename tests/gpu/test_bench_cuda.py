"""``resnets bench --device cuda --quick`` on a real GPU (skipped without one; scripts/gpu_check.sh runs it): every
case of the chosen kinds runs on the GPU, in its fast precision, against the GPU's own measured peak. The device
plumbing is checked on any CPU in tests/bench/test_bench_device.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnets.cli import main

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)"),
]

#: One case of each kind, the speedrun net's among them; compilation is left to scripts/gpu_check.sh's bench stage.
CASES = ("train/resnet20", "train/speedrun", "infer/speedrun", "memory/resnet1202")


def test_bench_runs_on_the_gpu_against_its_own_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--device", "cuda", "--quick", "--no-compile", "--cases", *CASES, "--out", str(tmp_path)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    name = torch.cuda.get_device_name()
    assert name in table  # the machine line names the GPU
    data = json.loads((tmp_path / "bench.json").read_text())
    machine = data["machine"]
    assert machine["device"] == "cuda" and machine["gpu"]["name"] == name
    fast = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert machine["precision"] == {"amp": True, "dtype": fast, "channels_last": True}
    # Any CUDA GPU of the last decade multiplies faster than 1 TFLOP/s, and faster in half precision than fp32
    # (the CPU that feeds it does not reach the first): the peak was measured on the GPU.
    assert set(data["peak_flops"]) == {"float32", fast}
    assert data["peak_flops"][fast] > max(1e12, data["peak_flops"]["float32"])
    rows = {(row["case"], row["variant"]): row for row in data["rows"]}
    for key in (("train/resnet20", "engine"), ("train/speedrun", "engine"), ("infer/speedrun", "folded")):
        row = rows[key]
        for field in ("baseline", "ours", "ratio", "peak_fraction"):
            assert math.isfinite(row[field]) and row[field] > 0, (key, field, row[field])
        assert row["peak_fraction"] < 1.0 and row["details"]["device"] == "cuda"  # a share, not a rate
    assert rows[("train/speedrun", "engine")]["details"]["ours_dtype"] == fast
    assert rows[("infer/speedrun", "folded")]["details"]["max_abs_logit_diff"] < 0.5  # bf16 logits of random weights
    memory = rows[("memory/resnet1202", "checkpointing memory")]
    assert memory["ours"] is None and memory["notes"].startswith("skipped: CPU-only")
