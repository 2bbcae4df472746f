"""The MLP and sequence families train with ``resnets train`` on vector data: CSV and .npz files of
features, and images given to the model flattened (MLPs) or as rows of tokens (sequence encoders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resnets.cli import main
from tests.data.formats import write_idx


def _blobs(n_per_class: int, seed: int, features: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs: a learnable problem whose chance accuracy is 1/classes."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 3.0, (classes, features))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + rng.normal(0, 1.0, (len(y), features))
    return x.astype(np.float32), y


def _train(
    tmp_path: Path, model: str, data: Path, epochs: int = 6, lr: float = 0.02, *extra: str
) -> tuple[dict, list[dict]]:
    run = tmp_path / "run"
    argv = [
        "train",
        "--model",
        model,
        "--data",
        str(data),
        "--recipe",
        "fast",
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--lr",
        str(lr),
        "--out",
        str(run),
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


@pytest.mark.parametrize("model", ["resmlp_identity_20", "resmlp_learned_20", "highway_fc_10"])
def test_mlp_families_learn_from_a_csv_file(tmp_path: Path, model: str) -> None:
    x, y = _blobs(40, seed=0)
    path = tmp_path / "blobs.csv"
    header = ",".join(f"f{i}" for i in range(x.shape[1])) + ",label"
    names = np.array(["ant", "bee", "cat"])[y]
    lines = [header] + [",".join(f"{v:.5f}" for v in row) + f",{name}" for row, name in zip(x, names)]
    path.write_text("\n".join(lines) + "\n")
    summary, rows = _train(tmp_path, model, path)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["in_channels"] == 6 and config["data"]["classes"] == ["ant", "bee", "cat"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["test_accuracy"] >= 80.0  # chance is 33%


def test_mlp_learns_from_an_npz_file_with_a_test_split(tmp_path: Path) -> None:
    x, y = _blobs(40, seed=1)
    x_test, y_test = _blobs(15, seed=2)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    summary, _ = _train(tmp_path, "resmlp_multiskip_20", path)
    assert summary["test_accuracy"] >= 80.0


def _stripe_images(tmp_path: Path) -> Path:
    """MNIST-format IDX files whose class is the column of a bright vertical stripe: learnable flat or as tokens."""
    folder = tmp_path / "stripes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 40)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, :, 3 + 6 * label : 6 + 6 * label] = 230  # every row shows the class: no position needed
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels)
    return folder


@pytest.mark.parametrize(
    ("model", "channels", "optimizer"),
    [("resmlp_identity_20", 784, "sgd"), ("seq_encoder_pre_6", 28, "adamw"), ("seq_encoder_post_6", 28, "adamw")],
)
def test_image_data_trains_flattened_or_as_row_tokens(
    tmp_path: Path, model: str, channels: int, optimizer: str
) -> None:
    lr = 0.02 if optimizer == "sgd" else 1e-3
    summary, rows = _train(tmp_path, model, _stripe_images(tmp_path), 5, lr, "--set", f"optimizer={optimizer}")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["in_channels"] == channels
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["test_accuracy"] >= 90.0  # chance is 25%
