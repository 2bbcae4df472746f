"""Fine-tuning from the command line: a 1000-class ImageNet file trains on a 3-class image folder.

The file is torchvision's resnet18 state dict (random weights, no download) saved the way DDP saves it,
with ``module.`` before every key, so the test also shows that `resnets train --weights` and the Python API
read the same file through the same loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from resnets import create_model
from resnets.cli import main
from resnets.io.weight_files import load_weights, read_weight_file
from tests.data.formats import write_image_tree

CLASSES = {"ant": 8, "bee": 8, "cat": 8}
TRUNK = ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight")
Saved = tuple[Path, dict[str, torch.Tensor]]  # a weight file, and the tensors it holds under the model's names


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """root/{train,test}/{ant,bee,cat}/*.png: random 32x32 RGB images."""
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    write_image_tree(root / "train", CLASSES, size=(32, 32), seed=0)
    write_image_tree(root / "test", {name: 2 for name in CLASSES}, size=(32, 32), seed=1)
    return root


@pytest.fixture
def imagenet_file(tmp_path: Path) -> Saved:
    """A DDP-saved 1000-class resnet18 file, and its tensors under the model's own names."""
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
    return path, state


def train_args(tree: Path, weights: Path, out: Path) -> list[str]:
    # lr must be > 0; at 1e-30 an SGD step is far below the spacing of fp32 numbers near the weights,
    # so the loaded trunk stays bit for bit what the file holds while the run goes through every step.
    return [
        "train",
        "--model",
        "resnet18",
        "--data",
        str(tree),
        "--weights",
        str(weights),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "1e-30",
        "--set",
        "weight_decay=0",
        "--set",
        "warmup_epochs=0",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--no-amp",
    ]


def test_cli_fine_tunes_a_1000_class_file_with_a_fresh_head(tmp_path: Path, tree: Path, imagenet_file: Saved) -> None:
    path, state = imagenet_file
    run = tmp_path / "run"
    assert main([*train_args(tree, path, run), "--reset-head"]) == 0
    saved = load_file(str(run / "checkpoints/last.safetensors"))
    for key in TRUNK:
        assert torch.equal(saved[key], state[key]), key  # the trunk came from the file
    # Every conv weight (norm biases start at 0, where even a 1e-30 step shows, so they are left out).
    convs = [k for k, v in create_model("resnet18").named_parameters() if v.dim() == 4]
    assert len(convs) == 20 and all(torch.equal(saved[k], state[k]) for k in convs)
    assert saved["fc.weight"].shape == (3, 512) and saved["fc.bias"].shape == (3,)  # a fresh 3-class head
    # The API reads the same DDP-saved file through the same loader, into the same tensors.
    model = create_model("resnet18", num_classes=3)
    report = load_weights(model, read_weight_file(path), reset_head=True)
    assert report.ok and report.fresh == ["fc.weight", "fc.bias"]
    for key in TRUNK:
        assert torch.equal(model.state_dict()[key], saved[key]), key


def test_cli_without_reset_head_names_the_option(
    tmp_path: Path, tree: Path, imagenet_file: Saved, capsys: pytest.CaptureFixture
) -> None:
    path, _ = imagenet_file
    capsys.readouterr()
    assert main(train_args(tree, path, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "The file's classifier has 1000 classes, the model 3: pass --reset-head" in err
    assert str(path) in err


def test_api_reset_head_keeps_the_models_classifier_bit_for_bit(imagenet_file: Saved) -> None:
    path, state = imagenet_file
    model = create_model("resnet18", num_classes=3)
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    load_weights(model, read_weight_file(path), reset_head=True)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in head.items())
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert not np.shares_memory(own["conv1.weight"].numpy(), state["conv1.weight"].numpy())  # copied, not aliased


def test_reset_head_without_weights_is_refused(tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--model", "resnet18", "--data", str(tree), "--reset-head", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--reset-head replaces the classifier of a weight file; give the file with --weights" in err
    assert not (tmp_path / "r").exists()
