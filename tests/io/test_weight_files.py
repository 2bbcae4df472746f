"""Weight files: each format and wrapping loads, pickles that would run code are refused, mismatches are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnets import create_model
from resnets.errors import CheckpointError
from resnets.io.weight_files import LoadReport, load_weights, read_weight_file
from resnets.runs import open_run


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


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


LAYOUTS = {
    "bare": lambda s: s,
    "state_dict": lambda s: {"state_dict": s, "epoch": 3},
    "model": lambda s: {"model": s},
    "model_state_dict": lambda s: {"model_state_dict": s, "optimizer_step": 7},
    "state_dict_ema": lambda s: {"state_dict_ema": s},
    "model/state_dict": lambda s: {"model": {"state_dict": s, "epoch": 1}, "step": 2},
    "ddp": lambda s: prefixed(s, "module."),
    "compiled": lambda s: prefixed(s, "_orig_mod."),
    "ddp+compiled": lambda s: prefixed(s, "module._orig_mod."),
    "compiled+ddp": lambda s: prefixed(s, "_orig_mod.module."),
    "nested ddp": lambda s: {"state_dict": prefixed(s, "module.")},
}


@pytest.mark.parametrize("wrap", list(LAYOUTS))
def test_pth_layouts_load(tmp_path: Path, wrap: str) -> None:
    state = small_state()
    saved = LAYOUTS[wrap](state)
    torch.save(saved, tmp_path / "w.pth")
    loaded = read_weight_file(tmp_path / "w.pth")
    assert sorted(loaded) == ["fc.bias", "fc.weight"]
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_safetensors_and_pt_load(tmp_path: Path) -> None:
    state = small_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        assert torch.equal(read_weight_file(tmp_path / name)["fc.weight"], state["fc.weight"])


def test_prefixes_are_stripped_from_safetensors_too(tmp_path: Path) -> None:
    state = small_state()
    save_file(prefixed(state, "module._orig_mod."), str(tmp_path / "w.safetensors"))
    loaded = read_weight_file(tmp_path / "w.safetensors")
    assert sorted(loaded) == ["fc.bias", "fc.weight"]
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_a_prefix_only_some_keys_share_is_kept(tmp_path: Path) -> None:
    state = {"module.weight": torch.ones(2), "fc.weight": torch.zeros(2)}  # a submodule named "module"
    torch.save(state, tmp_path / "w.pth")
    assert sorted(read_weight_file(tmp_path / "w.pth")) == ["fc.weight", "module.weight"]


def test_ddp_file_loads_into_a_model_through_the_api(tmp_path: Path) -> None:
    source = create_model("resnet20", num_classes=4).eval()
    torch.save({"state_dict": prefixed(source.state_dict(), "module.")}, tmp_path / "ddp.pth")
    target = create_model("resnet20", num_classes=4).eval()
    report = load_weights(target, read_weight_file(tmp_path / "ddp.pth"))
    assert report == LoadReport(loaded=list(source.state_dict())) and report.ok  # every key, none left over
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": WritesMarker(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()  # saving does not call it; only unpickling would
    with pytest.raises(CheckpointError, match="refers to io.open.*only tensors-only checkpoints are accepted") as info:
        read_weight_file(tmp_path / "evil.pth")
    assert not marker.exists()
    message = str(info.value)
    assert "not a plain weights file" in message and "safetensors.torch.save_file" in message
    assert "weights_only" not in message and "\n" not in message  # never torch's advice to unpickle it fully


def test_pickled_function_is_refused(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2), "hook": a_function}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="refused to load .*a_function"):
        read_weight_file(tmp_path / "f.pt")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weight_file(tmp_path / "missing.pth")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown extension '\.bin'; expected one of .safetensors, .pth, .pt"):
        read_weight_file(tmp_path / "w.bin")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable tensors-only PyTorch file") as info:
        read_weight_file(tmp_path / "junk.pth")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_weight_file(tmp_path / "junk.safetensors")
    torch.save({"step": 3, "lr": 0.1}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="2 entries are not tensors"):
        read_weight_file(tmp_path / "state.pt")
    torch.save({"model": {}}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds an empty dict, not a state dict"):
        read_weight_file(tmp_path / "empty.pt")


def test_torchvision_state_dict_loads_unchanged(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    opened = open_run(tmp_path / "resnet18.pth", model="resnet18")
    ours = opened.model
    assert (opened.record.num_classes, opened.record.in_channels) == (1000, 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-5


def test_classifier_size_mismatch_names_reset_head_and_num_classes(tmp_path: Path) -> None:
    state = create_model("resnet20", num_classes=100).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_weights(create_model("resnet20"), state)
    assert "2 tensors differ in shape (fc.weight: file [100, 64] vs model [10, 64]" in str(info.value)
    assert (
        "The file's classifier has 100 classes, the model 10: pass --reset-head (reset_head=True) to train a fresh "
        "10-class classifier on these weights, or keep the file's classifier with a 100-class model (num_classes=100)"
    ) in str(info.value)


def test_wrong_architecture_lists_keys() -> None:
    with pytest.raises(CheckpointError, match=r"72 unexpected keys in the file \(layer1\.3\.conv1\.weight, .*--model"):
        load_weights(create_model("resnet20"), create_model("resnet32").state_dict())
    with pytest.raises(CheckpointError, match=r"72 keys missing from the file .*Check that --model"):
        load_weights(create_model("resnet32"), create_model("resnet20").state_dict())
    with pytest.raises(CheckpointError, match="72 unexpected keys"):  # reset_head forgives the classifier only
        load_weights(create_model("resnet20"), create_model("resnet32", num_classes=5).state_dict(), reset_head=True)


def test_reset_head_keeps_the_trunk_and_the_models_own_classifier() -> None:
    source = create_model("resnet20", num_classes=100)
    target = create_model("resnet20")
    fresh_head = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("fc.")}
    report = load_weights(target, source.state_dict(), reset_head=True)
    assert report.ok and report.fresh == ["fc.weight", "fc.bias"]
    for key, value in target.state_dict().items():
        expected = fresh_head[key] if key.startswith("fc.") else source.state_dict()[key]
        assert torch.equal(value, expected), key
    assert target.fc.weight.shape == (10, 64)


def test_reset_head_uses_the_models_classifier_name() -> None:
    source = create_model("densenet121", num_classes=1000)
    target = create_model("densenet121", num_classes=3)
    with pytest.raises(CheckpointError, match="The file's classifier has 1000 classes, the model 3: pass --reset-head"):
        load_weights(target, source.state_dict())
    report = load_weights(target, source.state_dict(), reset_head=True)
    assert report.fresh == ["classifier.weight", "classifier.bias"]
    assert torch.equal(target.features.conv0.weight, source.features.conv0.weight)


def test_a_different_input_channel_count_is_named_as_such() -> None:
    state = create_model("resnet20", in_channels=3).state_dict()
    with pytest.raises(CheckpointError, match="built for 3 input channels but the data gives the model 1"):
        load_weights(create_model("resnet20", in_channels=1), state, reset_head=True)


def test_weight_file_infers_classes_and_channels(tmp_path: Path) -> None:
    reference = create_model("resnet20", num_classes=7, in_channels=1).eval()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="pass --model NAME"):
        open_run(tmp_path / "w.safetensors")
    opened = open_run(tmp_path / "w.safetensors", model="resnet20")
    net = opened.model
    assert (net.num_classes, net.in_channels, opened.record.data) == (7, 1, None)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))
