"""Format detection from contents (not names), and the errors for missing or unknown inputs."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from resnets.data import detect_format, load_data
from resnets.errors import DataError

from .formats import tar_gz, write_cifar10, write_cifar100, write_image_tree, write_mnist_folder


def test_each_format_is_detected_from_contents_even_when_renamed(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path / "m")
    write_cifar10(tmp_path / "c10")
    write_cifar100(tmp_path / "c100")
    write_image_tree(tmp_path / "img", {"a": 1})
    tar_gz(tmp_path / "c10", tmp_path / "c10.tar.gz")
    shutil.copy(tmp_path / "c10.tar.gz", tmp_path / "download.bin")  # a renamed archive
    (tmp_path / "t.txt").write_text("f,label\n1,a\n")
    np.savez(tmp_path / "v.npz", x=np.zeros((1, 2)), y=np.zeros(1, int))
    (tmp_path / "v.npz").rename(tmp_path / "v.data")
    expected = {
        "m": ("idx", "m"),
        "m/train-images-idx3-ubyte.gz": ("idx", "m"),
        "c10": ("cifar10", "c10"),
        "c10/data_batch_2": ("cifar10", "c10"),
        "c100": ("cifar100", "c100"),
        "img": ("image-folder", "img"),
        "download.bin": ("cifar10", "download.bin"),
        "t.txt": ("csv", "t.txt"),
        "v.data": ("npz", "v.data"),
    }
    for name, (fmt, target) in expected.items():
        assert detect_format(tmp_path / name) == (fmt, tmp_path / target), name


def test_missing_path_is_named_with_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'.*nowhere' is neither a dataset name \(fashion-mnist, mnist, cifar10"):
        load_data(tmp_path / "nowhere")


def test_unknown_format_lists_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match=r"cannot tell the format of .*blob.bin; supported: .*IDX.*CIFAR.*csv.*npz"):
        load_data(tmp_path / "blob.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the format"):
        load_data(tmp_path / "empty")


def test_names_that_need_data_dir_say_so() -> None:
    with pytest.raises(DataError, match=r"dataset 'cifar10' is read from data_dir; pass data_dir="):
        load_data("cifar10")
