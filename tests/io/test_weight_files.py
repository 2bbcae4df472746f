"""Weight files: each format loads, pickles that would run code are refused, mismatches are explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnets import create_model
from resnets.errors import CheckpointError, ConfigError
from resnets.weights import load_model, load_state_dict_file, load_weights_into


class WritesMarker:
    """Unpickling this calls open(marker, "w"), i.e. runs code chosen by whoever wrote the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def a_function() -> None:  # pickled by reference: loading it would import and bind arbitrary code
    pass


def small_state() -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "ddp"])
def test_pth_layouts_load(tmp_path: Path, wrap: str) -> None:
    state = small_state()
    saved = {"bare": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
             "ddp": {f"module.{k}": v for k, v in state.items()}}[wrap]  # fmt: skip
    torch.save(saved, tmp_path / "w.pth")
    loaded = load_state_dict_file(tmp_path / "w.pth")
    assert sorted(loaded) == ["fc.bias", "fc.weight"]
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_safetensors_and_pt_load(tmp_path: Path) -> None:
    state = small_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        assert torch.equal(load_state_dict_file(tmp_path / name)["fc.weight"], state["fc.weight"])


def test_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": WritesMarker(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()  # saving does not call it; only unpickling would
    with pytest.raises(CheckpointError, match="refers to io.open.*only tensors-only checkpoints are accepted"):
        load_state_dict_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_pickled_function_is_refused(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2), "hook": a_function}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="refused to load .*a_function"):
        load_state_dict_file(tmp_path / "f.pt")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown extension '\.bin'; expected one of .safetensors, .pth, .pt"):
        load_state_dict_file(tmp_path / "w.bin")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable tensors-only PyTorch file"):
        load_state_dict_file(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state_dict_file(tmp_path / "junk.safetensors")
    torch.save({"step": 3, "lr": 0.1}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="2 entries are not tensors"):
        load_state_dict_file(tmp_path / "state.pt")


def test_torchvision_state_dict_loads_unchanged(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    ours, info = load_model(tmp_path / "resnet18.pth", model="resnet18")
    assert (info["num_classes"], info["in_channels"]) == (1000, 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-5


def test_classifier_size_mismatch_says_how_many_classes(tmp_path: Path) -> None:
    state = create_model("resnet20", num_classes=100).state_dict()
    with pytest.raises(CheckpointError, match="the file has 100 classes, the model 10: pass --num-classes 100") as info:
        load_weights_into(create_model("resnet20"), state)
    assert "2 tensors differ in shape (fc.weight: file [100, 64] vs model [10, 64]" in str(info.value)


def test_wrong_architecture_lists_keys() -> None:
    with pytest.raises(CheckpointError, match=r"72 unexpected keys in the file \(layer1\.3\.conv1\.weight, .*--model"):
        load_weights_into(create_model("resnet20"), create_model("resnet32").state_dict())
    with pytest.raises(CheckpointError, match=r"72 keys missing from the file .*Check that --model"):
        load_weights_into(create_model("resnet32"), create_model("resnet20").state_dict())


def test_non_strict_load_keeps_what_fits() -> None:
    source = create_model("resnet20", num_classes=100)
    target = create_model("resnet20")
    report = load_weights_into(target, source.state_dict(), strict=False)
    assert [k for k, _, _ in report.mismatched] == ["fc.weight", "fc.bias"]
    assert torch.equal(target.conv1.weight, source.conv1.weight)


def test_weight_file_infers_classes_and_channels(tmp_path: Path) -> None:
    reference = create_model("resnet20", num_classes=7, in_channels=1).eval()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="pass --model NAME"):
        load_model(tmp_path / "w.safetensors")
    net, info = load_model(tmp_path / "w.safetensors", model="resnet20")
    assert (net.num_classes, net.in_channels, info["classes"]) == (7, 1, None)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_run_dir_rebuilds_and_falls_back_to_last(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", checkpoints=("last",), model_options={"zero_init_last": True})
    net, info = load_model(run)
    assert info["checkpoint"].endswith("last.safetensors")
    assert (net.num_classes, net.in_channels, info["classes"], info["mean"]) == (3, 1, ["ant", "bee", "cat"], [0.5])
    assert not net.training
    with pytest.raises(ConfigError, match="contradicts the run directory"):
        load_model(run, model="resnet32")
    (run / "checkpoints" / "last.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no checkpoints/best.safetensors nor last.safetensors"):
        load_model(run)
    (run / "config.json").write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_model(run)
