"""IDX reading: both compressions, header validation, and the Fashion-MNIST / MNIST identities."""

from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.data import load_data
from resnets.data.idx import read_idx
from resnets.errors import DataError

from .formats import write_idx, write_mnist_folder


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_folder_round_trips_pixels_and_labels(tmp_path: Path, compress: bool) -> None:
    parts = write_mnist_folder(tmp_path / "mnist", compress=compress)
    bundle = load_data("mnist", tmp_path / "mnist")
    assert bundle.kind == "image" and bundle.sample_shape == (1, 28, 28) and bundle.in_channels == 1
    assert bundle.classes == [str(d) for d in range(10)]
    assert bundle.flip is False  # digits are not mirror-invariant
    assert bundle.train.inputs.dtype == torch.uint8 and bundle.train.targets.dtype == torch.int64
    assert torch.equal(bundle.train.inputs[:, 0], torch.from_numpy(parts["train"][0]))
    assert bundle.test is not None and torch.equal(bundle.test.targets, torch.from_numpy(parts["t10k"][1]).long())
    expected_mean = parts["train"][0].mean() / 255
    assert bundle.mean[0] == pytest.approx(expected_mean, rel=1e-9)
    assert bundle.std[0] == pytest.approx(parts["train"][0].std() / 255, rel=1e-9)


def test_fashion_mnist_name_reads_data_dir_with_fashion_classes(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path / "f", n_train=10, n_test=2)
    bundle = load_data("fashion-mnist", tmp_path / "f")
    assert bundle.name == "fashion-mnist"
    assert bundle.classes[0] == "T-shirt/top" and bundle.classes[9] == "Ankle boot" and len(bundle.classes) == 10
    assert bundle.flip is True


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"5 images but .*train-labels-idx1-ubyte has 4 labels"):
        load_data("mnist", tmp_path)


def test_bad_magic_and_truncated_file_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file: magic bytes 12340803"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", np.zeros((2, 4, 4), np.uint8), dims=(3, 4, 4))
    with pytest.raises(DataError, match=r"dims \(3, 4, 4\) \(64 bytes\) but the file has 48 bytes"):
        read_idx(short)


def test_labels_out_of_class_range_are_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 12], np.uint8))
    with pytest.raises(DataError, match=r"labels range over \[3, 12\] but there are 10 classes"):
        load_data("mnist", tmp_path)


def test_missing_train_files_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lacks train-images, train-labels"):
        load_data("mnist", tmp_path)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
@pytest.mark.slow
def test_installed_fashion_mnist_has_the_published_sizes_and_statistics() -> None:
    bundle = load_data("fashion-mnist", val_size=5000)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (55000, 5000, 10000)
    assert bundle.mean[0] == pytest.approx(0.286, abs=2e-3) and bundle.std[0] == pytest.approx(0.353, abs=2e-3)
