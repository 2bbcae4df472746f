"""The fast inference path gives the eager fp32 model's predictions: the correctness guard of every fast path.

Guard: on a test batch, top-1 agreement with the eager fp32 model >= 99% and logits within a stated
tolerance, relative to the logits' scale: 1e-4 for float32 paths (folding only reorders float32 rounding),
5e-2 for bf16 autocast (8 mantissa bits, through 20 layers). The models are trained for a few dozen steps
on separable synthetic images first, so that their predictions have margins, as a trained model's do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets import create_model, list_models
from resnets.cli import main
from resnets.device import Precision, cpu_has_native_bf16
from resnets.errors import ConfigError
from resnets.export import export_model
from resnets.inference import (
    InferenceModel,
    agreement,
    find_norm_pairs,
    fold_batchnorm,
    optimize_for_inference,
    with_fast_model,
)
from resnets.models import get_model_entry
from resnets.runs import open_run
from tests.helpers import randomize_bn

CPU = torch.device("cpu")
FP32 = Precision(CPU, amp=False, dtype=torch.bfloat16, channels_last=True)
BF16 = Precision(CPU, amp=True, dtype=torch.bfloat16, channels_last=True)
FP32_TOLERANCE, BF16_TOLERANCE = 1e-4, 5e-2
BIG = {"resnet1202", "preact_resnet1001", "densenet_bc_190_40"}  # minutes per forward on 2 cores
# Deeper or wider twins of models in the sweep (same blocks, more of them): seconds each to build, nothing new.
TWINS = {"resnet101", "resnet152", "wide_resnet101_2", "resnext101_32x8d", "densenet169", "densenet201"}


def separable_data(classes: int = 4, n: int = 256, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``classes`` fixed random patterns plus noise: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(classes, 3, size, size, generator=generator)
    y = torch.arange(n) % classes
    return patterns[y] + 0.5 * torch.randn(n, 3, size, size, generator=generator), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    """resnet20 trained to separate the synthetic classes (fp32), and a held-out batch."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    x, y = separable_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(40):
        part = slice((step * 32) % 224, (step * 32) % 224 + 32)
        loss = F.cross_entropy(model(x[part]), y[part])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test, test_y = separable_data(n=64)
    model.eval()
    with torch.no_grad():
        assert (model(test).argmax(1) == test_y).float().mean() > 0.9  # the guard compares real predictions
    return model, test


def test_folding_finds_every_conv_bn_pair_of_resnet20() -> None:
    # resnet20: the stem conv and two convs in each of 9 blocks, each followed by its BatchNorm; option A
    # shortcuts have none. 1 + 9 * 2 = 19.
    model = randomize_bn(create_model("resnet20"))
    pairs = find_norm_pairs(model, torch.randn(2, 3, 32, 32))
    assert len(pairs) == 19
    assert ("conv1", "bn1") in pairs and ("layer3.2.conv2", "layer3.2.bn2") in pairs
    folded, count = fold_batchnorm(model, torch.randn(2, 3, 32, 32))
    assert count == 19
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_a_layer_whose_output_is_read_twice_is_not_folded() -> None:
    # Pre-activation: the stem conv's output is both layer1.0.bn1's input and the identity shortcut, so
    # folding bn1 into it would change the shortcut. Every other BN follows a conv read only by it.
    model = randomize_bn(create_model("preact_resnet110"))
    x = torch.randn(2, 3, 32, 32)
    pairs = find_norm_pairs(model, x)
    assert ("conv1", "layer1.0.bn1") not in pairs and ("layer1.0.conv1", "layer1.0.bn2") in pairs
    folded, count = fold_batchnorm(model, x)
    assert count == 54  # 55 convs followed by a BN, the stem's left alone
    assert isinstance(folded.layer1[0].bn1, nn.BatchNorm2d)
    assert agreement(model, folded, x).relative_diff < FP32_TOLERANCE


def test_the_output_check_catches_a_reader_the_pass_cannot_see(monkeypatch) -> None:
    # If pairing ever misses a second reader, the folded copy's outputs differ and the pair is dropped.
    model = randomize_bn(create_model("preact_resnet110"))
    x = torch.randn(2, 3, 32, 32)
    found = find_norm_pairs(model, x)
    monkeypatch.setattr("resnets.inference.find_norm_pairs", lambda m, e: [("conv1", "layer1.0.bn1"), *found])
    folded, count = fold_batchnorm(model, x)
    assert count == 54 and isinstance(folded.layer1[0].bn1, nn.BatchNorm2d)


def test_folding_leaves_the_callers_model_alone() -> None:
    model = randomize_bn(create_model("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model, torch.randn(2, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", [n for n in list_models() if n not in BIG | TWINS])
def test_fast_path_agrees_with_eager_fp32_on_every_model(name: str) -> None:
    entry = get_model_entry(name)
    size = entry.input_size
    if entry.input_kind == "image" and size[-1] > 32:
        size = (size[0], 32, 32)  # ImageNet models: the same graph at a smaller size
    model = randomize_bn(create_model(name)).eval()
    x = torch.randn(4, *size)
    fast = optimize_for_inference(model, x, precision=FP32)
    check = agreement(model, fast, x)
    assert check.top1 == 1.0 and check.relative_diff < FP32_TOLERANCE, (name, check)


def test_fp32_fast_path_guard(trained) -> None:
    model, test = trained
    fast = optimize_for_inference(model, test, precision=FP32)
    assert fast.applied == ["19 BatchNorms folded", "channels_last"]
    check = agreement(model, fast, test)
    assert check.top1 >= 0.99 and check.relative_diff < FP32_TOLERANCE


@pytest.mark.slow
def test_bf16_fast_path_guard(trained) -> None:
    # Forced on, whatever this CPU has: emulated bf16 is slow but computes the same numbers.
    model, test = trained
    fast = optimize_for_inference(model, test, precision=BF16)
    assert "bfloat16 autocast" in fast.applied
    check = agreement(model, fast, test)
    assert check.top1 >= 0.99 and check.relative_diff < BF16_TOLERANCE
    assert check.max_abs_diff > 0  # bf16 really ran: the logits moved


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_fast_path_guard_and_batch_padding(trained) -> None:
    model, test = trained
    fast = optimize_for_inference(model, test[:16], precision=FP32, compile=True)
    assert fast.applied[-1] == "torch.compile (freezing)" and fast.batch == 16 and fast.compile_time_s > 0
    for batch in (test[:16], test[:5], test):  # the compiled size, a short last batch, several batches
        check = agreement(model, fast, batch)
        assert check.top1 >= 0.99 and check.relative_diff < FP32_TOLERANCE


def test_batches_of_other_sizes_are_padded_and_split_without_changing_outputs() -> None:
    model = randomize_bn(create_model("resnet20")).eval()
    as_compiled = InferenceModel(model, FP32, [], batch=8)  # the padding logic a compiled model runs
    x = torch.randn(19, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(as_compiled(x[:3]), expected[:3], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(as_compiled(x), expected, rtol=1e-5, atol=1e-4)  # 8 + 8 + 3 (padded)


def test_auto_compiles_only_big_jobs_and_refuses_without_a_compiler(monkeypatch) -> None:
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    assert optimize_for_inference(model, x, precision=FP32, compile=None, expected_flops=1e9).batch is None
    monkeypatch.setattr("resnets.inference.compiler_available", lambda: False)
    # auto on a big job without a compiler: eager, silently; asked for explicitly: one clear error
    assert optimize_for_inference(model, x, precision=FP32, compile=None, expected_flops=1e15).batch is None
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        optimize_for_inference(model, x, precision=FP32, compile=True)


def test_with_fast_model_keeps_every_batch_and_handles_an_empty_job() -> None:
    model = create_model("resnet20").eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64)) for _ in range(3)]
    fast, again = with_fast_model(model, batches, precision=FP32)
    assert [b[0].shape[0] for b in again] == [4, 4, 4]
    fast, again = with_fast_model(model, [], precision=FP32)
    assert list(again) == [] and fast.applied == []


def test_eval_reports_the_fast_path_and_matches_training(run_dir: Path) -> None:
    # The run's own record was measured by training through the same fast path: eval reproduces it.
    import json

    assert main(["eval", str(run_dir), "--no-compile"]) == 0
    described = json.loads((run_dir / "eval-test" / "eval.json").read_text())
    trained_in_bf16 = json.loads((run_dir / "config.json").read_text())["amp"]  # what RESNETS_NATIVE_BF16 chose
    assert trained_in_bf16 is cpu_has_native_bf16()
    autocast = ["bfloat16 autocast"] if trained_in_bf16 else []
    assert described["inference"] == ["19 BatchNorms folded", "channels_last", *autocast]
    recorded = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert described["top1_error"] == pytest.approx(recorded[-1]["test_error"], abs=1e-9)


def test_optimized_torchscript_export_has_no_batchnorm_and_matches(run_dir: Path) -> None:
    result = export_model(run_dir, "torchscript", optimize=True)
    assert result.path.name == "resnet20-optimized.torchscript.pt"
    assert "19 BatchNorms folded" in result.note
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 * max(1.0, result.max_abs_output)
    run = open_run(run_dir)
    loaded = torch.jit.load(str(result.path))
    assert "batch_norm" not in str(loaded.graph)
    x = torch.randn(3, *run.record.data.sample_shape)
    check = agreement(run.model.float().to(memory_format=torch.contiguous_format), loaded, x)
    assert check.top1 == 1.0 and check.relative_diff < FP32_TOLERANCE


def test_optimize_refuses_safetensors_in_one_line(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(run_dir), "--format", "safetensors", "--optimize"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optimize applies to onnx and torchscript" in err
