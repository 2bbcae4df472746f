"""`resnets export`: each format is written, and the exported model reproduces the PyTorch outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from resnets.cli import main
from resnets.export import export_model
from resnets.runs import open_run


@pytest.mark.slow
def test_onnx_matches_pytorch(trained_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = trained_run(channels=3, size=16)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert "verified: max |exported - PyTorch|" in capsys.readouterr().out
    net = open_run(run).model
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic
        x = torch.randn(batch, 3, 16, 16)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            assert (torch.from_numpy(logits) - net(x)).abs().max() < 1e-4
    assert not list(tmp_path.glob("*.data"))  # weights inside the file, no external data


def test_torchscript_matches_pytorch(run_dir: Path) -> None:
    run = run_dir
    result = export_model(run, "torchscript")
    assert result.path == run / "exports" / "resnet20.torchscript.pt"
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.x, still loads
        scripted = torch.jit.load(str(result.path))
    net = open_run(run).model
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert (scripted(x) - net(x)).abs().max() < 1e-4


def test_safetensors_export_reloads_without_model_name(trained_run, tmp_path: Path) -> None:
    run = trained_run(args=("--model-option", "zero_init_last=true"))
    result = export_model(run, "safetensors", out=tmp_path / "w.safetensors")
    assert result.max_abs_diff == 0.0
    sidecar = json.loads(result.sidecar.read_text())
    recorded = json.loads((run / "config.json").read_text())
    assert sidecar["record"]["model"] == "resnet20" and sidecar["record"]["data"]["classes"] == ["ant", "bee", "cat"]
    exported = open_run(tmp_path / "w.safetensors")  # the metadata carries the run record: model, options, data
    assert exported.record.model_options == {"zero_init_last": True}
    assert exported.record.data.mean == recorded["data"]["mean"] and exported.record.data.sample_shape == [1, 8, 8]
    original = open_run(run).model
    for name, tensor in original.state_dict().items():
        assert torch.equal(exported.model.state_dict()[name], tensor), name


def test_export_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = run_dir
    assert main(["export", str(run), "--format", "torchscript", "--opset", "17"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--opset applies to ONNX only" in err[0]
    torch.save({"fc.weight": torch.zeros(3, 64)}, tmp_path / "w.pth")
    assert main(["export", str(tmp_path / "w.pth"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --model NAME" in err[0]
