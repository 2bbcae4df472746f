"""Fine-tuning from the command line: a 1000-class ImageNet file trains on a 3-class image folder.

The file is torchvision's resnet18 state dict (random weights, no download) saved the way DDP saves it,
with ``module.`` before every key, so the test also shows that `resnets train --weights` and the Python API
read the same file through the same loader.
"""

from __future__ import annotations

import csv
import json
import math
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


# -- fine-tuning pays: a pretrained 1000-class file against training from scratch, on a small image folder ------------

SOURCE = [(angle, cycles) for angle in (0, 45, 90, 135) for cycles in (3, 6)]  # what the file was pretrained on
TARGET = [(22.5, 4.5), (67.5, 4.5), (112.5, 4.5), (157.5, 4.5)]  # the folder's 4 classes: orientations in between


def gratings(classes: list[tuple[float, float]], per_class: int, seed: int, side: int = 32) -> tuple[np.ndarray, ...]:
    """Coloured sinusoidal gratings with noise: (N, side, side, 3) uint8 images and their labels (class index).

    A class is an orientation (degrees, jittered by 4) and a frequency (cycles per image); phase, colour and pixel
    noise are random. Oriented-edge filters learned on one set of orientations serve the others.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    images, labels = [], []
    for label, (angle, cycles) in enumerate(classes):
        for _ in range(per_class):
            a = np.radians(angle + rng.normal(0, 4))
            wave = np.sin(2 * np.pi * cycles * (x * np.cos(a) + y * np.sin(a)) / side + rng.uniform(0, 2 * np.pi))
            image = 0.5 + 0.35 * wave[..., None] * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 0.15, (side, side, 3))
            images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def pretrained_file(path: Path, steps: int = 40) -> Path:
    """torchvision's resnet18 (1000 classes) trained briefly on the source gratings, saved as a plain state dict."""
    torchvision = pytest.importorskip("torchvision")
    images, labels = gratings(SOURCE, 64, seed=0)
    x = torch.tensor(images).permute(0, 3, 1, 2).float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), path)
    return path


def grating_folder(root: Path, train: int = 8, test: int = 16) -> Path:
    """root/{train,test}/cK/*.png: the target classes, ``train`` and ``test`` images of each."""
    from PIL import Image

    for split, count, seed in (("train", train, 10), ("test", test, 11)):
        images, labels = gratings(TARGET, count, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def _run(run: Path, data: Path, *extra: str) -> tuple[dict, list[float]]:
    # No flips: a flip turns a 22.5-degree grating into a 157.5-degree one, another class.
    argv = ["train", "--model", "resnet18", "--data", str(data), "--max-steps", "30", "-b", "16", "--no-augment"]
    argv += ["--eval-every", "5", "--no-amp"]  # every 10 steps (a resnet18 checkpoint is 90 MB), in fp32 anywhere
    assert main([*argv, "--device", "cpu", "--quiet", "--out", str(run), *extra]) == 0
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "steps.csv") as file:
        return summary, [float(row["loss"]) for row in csv.DictReader(file)]


@pytest.mark.slow
@pytest.mark.pinned_precision("both runs train in fp32 (--no-amp)")
def test_fine_tuning_a_1000_class_file_beats_training_from_scratch_without_diverging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    data = grating_folder(tmp_path / "folder")  # 32 training images: 2 steps per epoch at batch 16
    weights = pretrained_file(tmp_path / "resnet18-gratings.pth")
    scratch, _ = _run(tmp_path / "scratch", data)
    tuned, losses = _run(tmp_path / "tuned", data, "--weights", str(weights), "--reset-head")
    config = json.loads((tmp_path / "tuned/config.json").read_text())
    assert config["recipe"]["name"] == "finetune" and config["recipe"]["lr"] == 0.01  # chosen for --weights
    # On the development machine: 3.1% against 53.1% from scratch (chance is 75%).
    assert tuned["test_error"] <= 15.0 and scratch["test_error"] >= tuned["test_error"] + 20.0
    # No divergence: every loss finite, none far above the first, and the last ones well below it.
    assert all(math.isfinite(loss) for loss in losses) and max(losses) < 3 * losses[0]
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_the_banner_says_which_weights_were_loaded_from_where_and_that_the_head_is_new(
    tmp_path: Path, tree: Path, imagenet_file: Saved, capsys: pytest.CaptureFixture
) -> None:
    path, _ = imagenet_file
    args = [arg for arg in train_args(tree, path, tmp_path / "run") if arg != "--quiet"]
    assert main([*args, "--reset-head", "--log-every", "100"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"model     resnet18: {11_178_051:,} parameters"  # 11,689,512 less 997 of ImageNet's classes
    assert lines[1] == (
        f"weights   {path} (--weights): 120 tensors loaded; the classifier (fc) is new, for 3 classes, trained from "
        "scratch"
    )
    recipe = next(line for line in lines if line.startswith("recipe "))
    assert recipe.startswith("recipe    finetune: sgd nesterov lr 1e-30")  # the recipe for starting weights
