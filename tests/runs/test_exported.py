"""Exported files opened for inference: each carries its own preprocessing, and eval and predict feed them alike."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

from resnets.cli import main
from resnets.errors import CheckpointError
from resnets.export import export_model, quiet
from resnets.io.model_files import exported_format
from resnets.predict import predict_images, read_image
from resnets.runs import Run, open_run
from resnets.runs.exported import open_source


def capture_inputs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record every batch that eval or predict feeds a model, whatever the file: both call Run.inference_model."""
    seen: list[torch.Tensor] = []
    original = Run.inference_model

    def recording(self: Run, batches, **options):
        model, batches = original(self, batches, **options)
        model.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach().cpu().clone()))
        return model, batches

    monkeypatch.setattr(Run, "inference_model", recording)
    return seen


def test_exported_files_are_told_apart_by_name_and_by_content(run_dir: Path, tmp_path: Path) -> None:
    scripted = export_model(run_dir, "torchscript").path
    renamed = tmp_path / "model.pt"  # a TorchScript archive under the plain .pt suffix
    renamed.write_bytes(scripted.read_bytes())
    torch.save({"fc.weight": torch.zeros(3, 64)}, tmp_path / "weights.pt")  # a .pt weight file: not TorchScript
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip")
    assert exported_format(scripted) == "torchscript" and exported_format(renamed) == "torchscript"
    assert exported_format(tmp_path / "weights.pt") is None and exported_format(tmp_path / "garbage.pt") is None
    assert exported_format(tmp_path / "m.onnx") == "onnx" and exported_format(run_dir) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(tmp_path / "bare.torchscript.pt"))
    with pytest.raises(CheckpointError, match="carries no resnets run record"):
        open_source(tmp_path / "bare.torchscript.pt")
    with pytest.raises(CheckpointError, match="is an exported torchscript model"):
        open_run(renamed)  # export and the instruments need the modules, not a graph


def test_a_torchscript_export_opens_with_the_runs_record_and_no_run_directory(run_dir: Path, tmp_path: Path) -> None:
    scripted = tmp_path / "elsewhere" / "net.torchscript.pt"
    export_model(run_dir, "torchscript", out=scripted)
    opened, original = open_source(scripted), open_run(run_dir)
    assert opened.exported == "torchscript" and opened.path is None and opened.checkpoint == scripted
    assert opened.record.data == original.record.data and opened.classes == ["ant", "bee", "cat"]
    assert opened.record.model == "resnet20" and not opened.record.amp and not opened.record.channels_last


def test_eval_and_predict_feed_an_exported_model_the_same_tensor(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = export_model(run_dir, "safetensors", out=tmp_path / "w.safetensors").path
    data = Path(json.loads((run_dir / "config.json").read_text())["data"]["spec"])
    image = data / "test" / "ant" / "0.png"  # the first sample of the test split: classes, then files, sorted
    seen = capture_inputs(monkeypatch)
    assert main(["eval", str(weights), "--out", str(tmp_path / "eval")]) == 0
    (eval_batch,) = seen  # the 12 test images in one batch
    predict_images(weights, [image], top_k=1)
    predict_batch = seen[-1]
    assert eval_batch.shape == (12, 1, 8, 8) and predict_batch.shape == (1, 1, 8, 8)
    assert torch.equal(eval_batch[0], predict_batch[0])  # bit for bit
    record = open_run(run_dir).record.data
    by_hand = (read_image(image, 1, (8, 8)).float() / 255 - record.mean[0]) / record.std[0]
    assert torch.allclose(predict_batch[0], by_hand, atol=1e-6)  # and it is the run's normalisation


def test_eval_of_a_torchscript_export_gives_the_runs_test_error(run_dir: Path, tmp_path: Path) -> None:
    scripted = export_model(run_dir, "torchscript", out=tmp_path / "net.torchscript.pt").path
    assert main(["eval", str(scripted), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    recorded = json.loads((run_dir / "summary.json").read_text())["test_error"]
    assert report["top1_error"] == recorded and report["n"] == 12 and report["exported"] == "torchscript"
    assert report["inference"] == ["torchscript graph as saved"] and report["precision"] == "fp32"


def test_a_missing_onnxruntime_is_one_line_naming_the_extra(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not read: onnxruntime is missing")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    image = Path(json.loads((run_dir / "config.json").read_text())["data"]["spec"]) / "test" / "ant" / "0.png"
    assert main(["predict", str(tmp_path / "model.onnx"), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "onnxruntime, which is not installed: pip install -e '.[onnx]' in the resnets checkout" in err[0]
    )


def test_quiet_swallows_prints_warnings_and_log_records(
    capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet() as chatter:
            print("[torch.onnx] Run decompositions...")
            warnings.warn("legacy exporter", DeprecationWarning, stacklevel=1)
            logging.getLogger("torch.onnx").warning("a log record")
        logging.getLogger("resnets.test").warning("after: logging works again")
    assert chatter.getvalue() == "[torch.onnx] Run decompositions...\n"
    assert caught == []
    assert capfd.readouterr() == ("", "")
    assert [record.getMessage() for record in caplog.records] == ["after: logging works again"]  # restored


@pytest.mark.slow
def test_predict_agrees_on_the_run_and_its_onnx_torchscript_and_safetensors_exports(
    trained_run, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    # Exports hold fp32 graphs, so the run they are compared with is fp32 too, whatever RESNETS_NATIVE_BF16
    # says; the run's own bf16 path is held to the fp32 model by test_inference's guard.
    run = trained_run(channels=3, size=16, args=("--no-amp",))
    data = Path(json.loads((run / "config.json").read_text())["data"]["spec"])
    images = sorted((data / "test").rglob("*.png"))
    files = {
        "onnx": export_model(run, "onnx", out=tmp_path / "a" / "m.onnx").path,
        "torchscript": export_model(run, "torchscript", out=tmp_path / "b" / "m.torchscript.pt").path,
        "safetensors": export_model(run, "safetensors", out=tmp_path / "c" / "m.safetensors").path,
    }
    expected = predict_images(run, images, top_k=3)
    assert len(expected) == 12
    for kind, path in files.items():
        got = predict_images(path, images, top_k=3)
        assert [p.labels[0] for p in got] == [p.labels[0] for p in expected], kind
        for mine, theirs in zip(got, expected):
            assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-4), kind
            assert sum(mine.probabilities) == pytest.approx(1.0, abs=1e-5)  # all 3 classes
