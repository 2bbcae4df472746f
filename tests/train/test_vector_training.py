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


def test_label_column_names_the_label_and_predict_scores_csv_and_npz_rows(tmp_path: Path, capsys) -> None:
    """--label-column picks a label that is neither last nor called label/target/class, and is recorded, so that
    eval reloads the file the same way and predict scores feature files by it (with or without the label)."""
    x, y = _blobs(40, seed=0)
    species = np.array(["ant", "bee", "cat"])[y]
    header = "species," + ",".join(f"f{i}" for i in range(x.shape[1])) + ",weight_g"  # weight_g is a feature
    weight = np.round(np.random.default_rng(5).uniform(1, 9, len(y)), 2)
    lines = [header] + [f"{s}," + ",".join(f"{v:.5f}" for v in row) + f",{w}" for s, row, w in zip(species, x, weight)]
    data = tmp_path / "animals.csv"
    data.write_text("\n".join(lines) + "\n")
    summary, _ = _train(tmp_path, "resmlp_identity_20", data, 6, 0.02, "--label-column", "species")
    assert summary["test_accuracy"] >= 80.0  # the features predict the species; chance is 33%
    record = json.loads((tmp_path / "run/config.json").read_text())
    assert record["data"]["label_column"] == "species" and record["data"]["sample_shape"] == [7]
    assert record["data"]["classes"] == ["ant", "bee", "cat"]
    assert main(["eval", str(tmp_path / "run")]) == 0  # reloads the CSV by the recorded label column
    assert f"top-1 error {summary['test_error']:.2f}%" in capsys.readouterr().out
    # Scoring: the training file's columns with the label (left out by its recorded name) or without it.
    unlabeled = tmp_path / "score.csv"
    unlabeled.write_text("\n".join(line.split(",", 1)[1] for line in lines[:4]) + "\n")
    np.savez(tmp_path / "score.npz", x=np.column_stack([x[:2], weight[:2]]).astype(np.float32))
    capsys.readouterr()
    files = [str(data), str(unlabeled), str(tmp_path / "score.npz")]
    assert main(["predict", str(tmp_path / "run"), *files, "--top-k", "1", "--format", "csv"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert [r[0] for r in rows[:2]] == [f"{data}:2", f"{data}:3"] and len(rows) == len(y) + 3 + 2
    assert rows[len(y)][0] == f"{unlabeled}:2" and rows[-1][0] == f"{tmp_path / 'score.npz'}:x[1]"
    predicted = [r[2] for r in rows[: len(y)]]
    assert np.mean(np.array(predicted) == species) >= 0.8
    assert [r[2] for r in rows[len(y) : len(y) + 3]] == predicted[:3]  # the same rows, without their label
    assert [r[2] for r in rows[-2:]] == predicted[:2]


def test_a_label_column_that_is_not_there_is_one_line_with_the_closest(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.csv"
    data.write_text("species,f0\nant,1.0\nbee,2.0\nant,1.5\nbee,2.5\nant,1.1\n")
    argv = ["train", "--model", "resmlp_identity_20", "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--label-column", "specie"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--label-column 'specie' is not a column of {data}; did you mean 'species'?"), err
    assert not (tmp_path / "r").exists()
