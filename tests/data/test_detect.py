"""Format detection from contents (not names), and the errors for missing or unknown inputs."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from resnets.data import detect_format, load_data
from resnets.errors import DataError

from .formats import tar_gz, write_cifar10, write_cifar100, write_idx, write_image_tree, write_mnist_folder

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    with pytest.raises(
        DataError, match=r"dataset 'cifar10' is read from a folder you give: --data-dir FOLDER \(data_dir= in Python\)"
    ):
        load_data("cifar10")


# -- what the data is, told by its content ----------------------------------------------------------------------


def digit_like(n: int, seed: int = 0) -> np.ndarray:
    """Anti-aliased rings ("0"s) on black: about MNIST's statistics (mean pixel 0.13, 81% zero pixels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28].astype(float)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(12, 16, 2)
        d = np.sqrt(((y - cy) / rng.uniform(7, 10)) ** 2 + ((x - cx) / rng.uniform(4, 7)) ** 2)
        out[i] = np.round(255 * np.clip(1.6 - 1.6 * np.abs(d - 1) / 0.25, 0, 1))
    return out


def garment_like(n: int, seed: int = 0) -> np.ndarray:
    """Large textured blobs filling half the frame: about Fashion-MNIST's statistics (0.27, 54% zeros)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28].astype(float)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(12, 16, 2)
        d = np.sqrt(((y - cy) / rng.uniform(11, 13)) ** 2 + ((x - cx) / rng.uniform(8, 11)) ** 2)
        out[i] = np.where(d < 1, rng.integers(70, 230, (28, 28)), 0)
    return out


def write_idx_folder(folder: Path, images: np.ndarray, num_classes: int = 10) -> Path:
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(len(images)) % num_classes)
    return folder


def test_digits_in_a_folder_named_fashion_are_recognised_as_mnist(tmp_path: Path) -> None:
    images = digit_like(40)
    mean, zeros = images.mean() / 255, (images == 0).mean()
    assert abs(mean - 0.1307) < 0.01 and abs(zeros - 0.81) < 0.02  # the fixture is MNIST-like
    bundle = load_data(write_idx_folder(tmp_path / "fashion-mnist-copy", images), test_fraction=0)
    assert bundle.classes == [str(d) for d in range(10)] and bundle.flip is False  # content beats the path word
    assert bundle.identity == f"MNIST (recognised by content: mean pixel {mean:.3f}, {zeros:.0%} zero pixels)"


def test_garments_in_a_folder_named_digits_are_recognised_as_fashion_mnist(tmp_path: Path) -> None:
    images = garment_like(40)
    mean = images.mean() / 255
    bundle = load_data(write_idx_folder(tmp_path / "digits", images), test_fraction=0)
    assert bundle.classes[0] == "T-shirt/top" and bundle.classes[9] == "Ankle boot" and bundle.flip is True
    assert bundle.identity.startswith(f"Fashion-MNIST (recognised by content: mean pixel {mean:.3f}, ")


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs dataset-fashion-mnist")
def test_the_installed_fashion_mnist_is_recognised_under_any_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "some-download"
    folder.mkdir()
    for source in FASHION_MNIST.glob("train-*"):
        (folder / source.name).symlink_to(source)
    bundle = load_data(folder, test_fraction=0)
    # The release's own statistics: mean pixel 0.2860 and 50.2% zeros over the 60,000 training images.
    assert bundle.identity == "Fashion-MNIST (recognised by content: mean pixel 0.286, 50% zero pixels)"
    assert bundle.classes[1] == "Trouser" and bundle.flip is True


def test_pixels_that_match_neither_fall_back_on_the_path(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)  # mean 0.5, ~0% zeros
    fashion = load_data(write_idx_folder(tmp_path / "my-fashion", noise), test_fraction=0)
    assert fashion.classes[0] == "T-shirt/top" and fashion.flip is True
    assert "match neither MNIST nor Fashion-MNIST" in fashion.identity
    assert fashion.identity.endswith('its path says "fashion")')
    digits = load_data(write_idx_folder(tmp_path / "other", noise), test_fraction=0)
    assert digits.classes[0] == "0" and digits.flip is False
    assert digits.identity.startswith("MNIST (the pixels match neither") and "digits assumed" in digits.identity


def test_a_name_decides_but_contrary_pixels_are_noted(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "d", garment_like(20))
    bundle = load_data("mnist", folder, test_fraction=0)
    assert bundle.classes[0] == "0" and bundle.flip is False
    assert bundle.identity.startswith("MNIST (by name); but its pixels look like Fashion-MNIST (mean pixel 0.2")


def test_idx_data_of_more_than_ten_classes_gets_numbered_classes(tmp_path: Path) -> None:
    bundle = load_data(write_idx_folder(tmp_path / "emnist", digit_like(47), num_classes=47), test_fraction=0)
    assert bundle.classes == [str(i) for i in range(47)] and bundle.flip is False
    assert bundle.identity == "IDX images of 47 classes, named by number (MNIST and Fashion-MNIST have 10)"


def test_cifar_identity_comes_from_its_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "a")
    write_cifar100(tmp_path / "b")
    assert load_data(tmp_path / "a").identity == "CIFAR-10 (recognised by its files: batches.meta, data_batch_1..5)"
    assert load_data(tmp_path / "b").identity == "CIFAR-100 (recognised by its files: meta, train, test)"
