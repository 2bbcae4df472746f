"""The CUDA paths, run by scripts/gpu_check.sh on a machine with a GPU (skipped elsewhere): bf16 autocast, fp16
autocast with the grad scaler (and its state through a resume), channels_last, torch.compile, gradient
checkpointing and the fast inference path, each checked against what the CPU suite checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets import create_model
from resnets.device import Precision, resolve_precision
from resnets.inference import agreement, optimize_for_inference
from resnets.train import resume_config, train
from tests.train.conftest import tiny_bundle, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)"),
]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("bf16", [True, False])
def test_amp_trains_and_resumes_bit_for_bit_on_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bf16: bool
) -> None:
    # bf16 where the GPU has it; fp16 with the grad scaler otherwise (forced here, so both run on any GPU).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    precision = resolve_precision(CUDA, None, None)
    assert precision.amp and precision.needs_scaler is not bf16
    options = {"epochs": 2, "device": "cuda"}
    whole = train(tiny_config(tmp_path / "whole", **options), data=tiny_bundle())
    assert whole["test_error"] == whole["test_error"]  # finite
    record = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert record["amp"] is True and record["amp_dtype"] == ("bfloat16" if bf16 else "float16")
    state = torch.load(tmp_path / "whole" / "checkpoints" / "last.state.pt", weights_only=True)
    assert ("scaler" in state) is not bf16  # the scaler's scale travels with the checkpoint
    train(tiny_config(tmp_path / "parts", max_steps=4, **options), data=tiny_bundle())
    train(resume_config(tmp_path / "parts", {"max_steps": None}), data=tiny_bundle(), resume=True)
    a = load_file(tmp_path / "whole" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "parts" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_compile_and_checkpointing_give_the_eager_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    # cuDNN and cuBLAS may run fp32 in TF32 (10 mantissa bits), which differs between layouts by more than fp32
    # rounding: the comparison is of true fp32 here.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = create_model("resnet20").to(CUDA)
    x, y = torch.randn(8, 3, 32, 32, device=CUDA), torch.randint(0, 10, (8,), device=CUDA)

    def grads(net: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    reference = grads(model, x)
    model.to(memory_format=torch.channels_last)
    for got in (grads(model, x.contiguous(memory_format=torch.channels_last)),):
        assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(got, reference))
    model.set_grad_checkpointing(True)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(grads(model, x), reference))
    model.set_grad_checkpointing(False)
    compiled = torch.compile(model)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(grads(compiled, x), reference))


@pytest.mark.parametrize("compile", [False, True])
def test_the_fast_inference_path_agrees_with_the_eager_fp32_model(compile: bool) -> None:
    torch.manual_seed(0)
    model = create_model("speedrun").to(CUDA).eval()
    x = torch.randn(64, 3, 32, 32, device=CUDA)
    precision = Precision(CUDA, amp=True, dtype=torch.bfloat16, channels_last=True)
    fast = optimize_for_inference(model, x, precision=precision, compile=compile)
    check = agreement(model, fast, x)
    assert check.relative_diff < 5e-2 and check.top1 >= 0.95  # bf16: 8 mantissa bits (tests/runs/test_inference)
