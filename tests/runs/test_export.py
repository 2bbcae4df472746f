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
def test_onnx_matches_pytorch_at_any_size_quietly_and_describes_itself(
    trained_run, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    run = trained_run(channels=3, size=16)
    out = tmp_path / "model.onnx"
    capfd.readouterr()  # only what the export writes, at the file-descriptor level (C++ and Python alike)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a plain `resnets` process would show them, not pytest's summary
        assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert [str(w.message) for w in caught] == []
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 2, lines  # no progress lines, warnings or log records from the exporter
    assert (
        lines[0].startswith(f"wrote {out} (torch.onnx dynamo exporter")
        and "dynamic batch, height and width" in lines[0]
    )
    assert lines[1].startswith("verified: max |exported - PyTorch| = ") and "of 16x16 and 20x20 inputs" in lines[1]
    assert captured.err == ""

    model = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    props = {entry.key: entry.value for entry in model.metadata_props}
    config = json.loads((run / "config.json").read_text())
    assert json.loads(props["mean"]) == config["data"]["mean"] and json.loads(props["std"]) == config["data"]["std"]
    assert json.loads(props["classes"]) == ["ant", "bee", "cat"] and props["model"] == "resnet20"
    assert (props["input_channels"], props["input_height"], props["input_width"]) == ("3", "16", "16")
    assert props["layout"] == "image" and json.loads(props["resnets_record"]) == json.loads(json.dumps(config))

    net = open_run(run).model
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 16, 16), (5, 3, 16, 16), (2, 3, 20, 20), (1, 3, 24, 12)):  # batch, height, width dynamic
        x = torch.randn(shape)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            assert (torch.from_numpy(logits) - net(x)).abs().max() < 1e-4, shape
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
    extra = {"resnets_record.json": ""}  # the run record travels inside the archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(result.path), _extra_files=extra)
    assert json.loads(extra["resnets_record.json"]) == json.loads((run / "config.json").read_text())
    assert result.checked == ("8x8",)


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
    scripted = export_model(run, "torchscript").path
    assert main(["export", str(scripted), "--format", "safetensors", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an exported torchscript model" in err[0] and "safetensors export" in err[0]
    torch.save({"fc.weight": torch.zeros(3, 64)}, tmp_path / "w.pth")
    assert main(["export", str(tmp_path / "w.pth"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --model NAME" in err[0]
