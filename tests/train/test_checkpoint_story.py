"""One checkpoint story: the final line, summary.json and ``resnets eval RUN`` name the same checkpoint and give
the same test error, in runs with a validation split (checkpoint best) and without one (checkpoint last).

To make "best" and "last" differ for sure, the validation samples' labels are swapped: the better the net learns
the task, the worse its validation error, so the validation split chooses the first epoch while training goes on.
The samples that --val-size holds out are found with the function that holds them out (split_validation), so
the file is otherwise an ordinary npz of 8x8 images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.cli import main
from resnets.data.dataset import ArrayDataset, split_validation

from .conftest import TINY

N_TRAIN, N_TEST, N_VAL, SEED = 224, 32, 32, 7


def _images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8x8 gray images, bright on the left half for class 0 and on the right half for class 1."""
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 90, (n, 1, 8, 8))
    for i, label in enumerate(labels):
        images[i, :, :, 4 * label : 4 * label + 4] += 120
    return images.astype(np.uint8), labels.astype(np.int64)


def _npz(path: Path, swap_val: bool) -> Path:
    rng = np.random.default_rng(0)
    x_train, y_train = _images(N_TRAIN, rng)
    x_test, y_test = _images(N_TEST, rng)
    if swap_val:
        index = ArrayDataset(torch.zeros(N_TRAIN, 1), torch.arange(N_TRAIN))
        _, val = split_validation(index, val_size=N_VAL, seed=SEED)
        held_out = val.targets.numpy()  # the positions --val-size takes, by the function that takes them
        y_train[held_out] = 1 - y_train[held_out]
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _train_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str], *split: str) -> tuple[str, dict, str]:
    data = _npz(tmp_path / "data.npz", swap_val=bool(split))
    run = tmp_path / "run"
    argv = ["train", "--model", TINY, "--data", str(data), "--seed", str(SEED), "--recipe", "fast", "--epochs", "4"]
    # no augmentation: a flip would swap the two classes
    argv += ["-b", "16", "--lr", "0.05", "--no-augment", "--device", "cpu", "--quiet", "--out", str(run), *split]
    assert main(argv) == 0
    final = capsys.readouterr().out.strip()
    summary = json.loads((run / "summary.json").read_text())
    assert main(["eval", str(run)]) == 0
    return final, summary, capsys.readouterr().out


def _percent(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return float(match.group(1))


def test_with_a_validation_split_all_three_name_best_and_give_its_error(tmp_path, capsys) -> None:
    final, summary, evaluated = _train_and_eval(tmp_path, capsys, "--val-size", str(N_VAL))
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    chosen = min(rows, key=lambda row: row["val_error"])
    assert chosen["epoch"] == 1 and rows[-1]["epoch"] == 4  # the swapped labels make the first epoch "best"
    assert chosen["test_error"] != rows[-1]["test_error"]  # so the old story (last epoch's figure) would differ
    assert summary["checkpoint"] == "best" and summary["checkpoint_epoch"] == 1
    assert summary["test_error"] == chosen["test_error"] and summary["last"]["test_error"] == rows[-1]["test_error"]
    assert f"of checkpoint best (epoch 1, chosen on val error {chosen['val_error']:.2f}%)" in final
    assert _percent(r"test error (\S+)%\)", final) == round(chosen["test_error"], 2)
    assert evaluated.startswith(f"{TINY} ({tmp_path / 'run/checkpoints/best.safetensors'}) on ")
    assert _percent(r"top-1 error (\S+)%", evaluated) == round(chosen["test_error"], 2)


def test_without_a_validation_split_all_three_name_last(tmp_path, capsys) -> None:
    final, summary, evaluated = _train_and_eval(tmp_path, capsys)
    last = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    assert summary["checkpoint"] == "last" and summary["checkpoint_epoch"] == 4 and "best" not in summary
    assert summary["test_error"] == last["test_error"]
    assert "of checkpoint last, after 4 epochs, 56 steps" in final
    assert _percent(r"test error (\S+)%\)", final) == round(last["test_error"], 2)
    assert evaluated.startswith(f"{TINY} ({tmp_path / 'run/checkpoints/last.safetensors'}) on ")
    assert _percent(r"top-1 error (\S+)%", evaluated) == round(last["test_error"], 2)
