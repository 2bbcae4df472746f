"""Bad data and bad files: one line on stderr and exit status 2; no hang, no memory blow-up, no partial file."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.cli import main
from resnets.errors import InputShapeError
from resnets.io import guard
from resnets.models.registry import create_model

from .formats import tar_gz, write_cifar10, write_image_tree, write_mnist_folder


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))  # decoded image trees stay in the test


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    """Run the CLI, expect exit 2 and exactly one stderr line holding every string of ``expected``."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def train_args(data: Path, out: Path, model: str = "resnet20") -> list[str]:
    return ["train", "--model", model, "--data", str(data), "--max-steps", "1", "--out", str(out), "--quiet"]


# 1. Damaged compressed files -------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_gzip_idx_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture, damage: str) -> None:
    write_mnist_folder(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()  # a valid 10-byte gzip header either way
    path.write_bytes(raw[:10] + b"garbage!" * 40 if damage == "garbage" else raw[: len(raw) // 2])
    one_error_line(train_args(tmp_path / "mnist", tmp_path / "run"), capsys, str(path), "damaged or truncated gzip")


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_truncated_cifar_archive_is_named(tmp_path: Path, capsys: pytest.CaptureFixture, cut: float) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=40)
    archive = tar_gz(tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: int(len(raw) * cut)])  # early: while listing members; late: in the last member
    one_error_line(train_args(archive, tmp_path / "run"), capsys, str(archive), "damaged or truncated")


# 2. An input too small for the model ----------------------------------------------------------------------


def test_densenet121_names_its_smallest_input() -> None:
    net = create_model("densenet121", num_classes=10, in_channels=1).eval()
    with pytest.raises(InputShapeError, match=r"at least 29x29 pixels.*got 28x28"):
        net(torch.zeros(1, 1, 28, 28))
    with torch.no_grad():  # 29 is the smallest size whose map survives the stem and three transitions
        assert net(torch.zeros(1, 1, 29, 29)).shape == (1, 10)


def test_densenet121_on_fashion_mnist_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_mnist_folder(tmp_path / "fashion-mnist", n_train=4, n_test=2)
    argv = [*train_args(tmp_path / "fashion-mnist", tmp_path / "run", "densenet121"), "--batch-size", "2"]
    one_error_line(argv, capsys, "at least 29x29", "got 28x28")


# 3. Files predict must not open or decode -----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real two-step run on 8x8 greyscale images, trained once for the predict tests."""
    root = tmp_path_factory.mktemp("bad-data-run")
    previous = os.environ.get("RESNETS_CACHE_DIR")
    os.environ["RESNETS_CACHE_DIR"] = str(root / "cache")
    write_image_tree(root / "data", {"ant": 3, "bee": 3}, size=(8, 8), gray=True)
    assert main([*train_args(root / "data", root / "run"), "--batch-size", "2"]) == 0
    yield root / "run"
    if previous is None:
        os.environ.pop("RESNETS_CACHE_DIR", None)
    else:
        os.environ["RESNETS_CACHE_DIR"] = previous


def test_predict_refuses_a_named_pipe_without_hanging(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(main(["predict", str(run_dir), str(fifo)])), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # a regression blocks in open(); a writer end releases it so the suite goes on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail("predict blocked opening a named pipe")
    assert result == [2]
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(fifo) in line and "named pipe" in line and "regular image files" in line


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height greyscale pixels but holds a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("side", [9_000, 100_000])  # above our limit only; above Pillow's own limit as well
def test_predict_refuses_a_decompression_bomb(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, side: int
) -> None:
    bomb = png_header(tmp_path / "bomb.png", side, side)
    one_error_line(["predict", str(run_dir), str(bomb)], capsys, str(bomb), "too large to decode")


# 4. Data that would train into a meaningless or diverging model -------------------------------------------


def test_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image_tree(tmp_path / "one", {"cat": 4})
    one_error_line(train_args(tmp_path / "one", tmp_path / "run"), capsys, "only class 'cat'", "at least 2 classes")


def test_test_images_of_another_size_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image_tree(tmp_path / "d" / "train", {"a": 2, "b": 2}, size=(8, 8))
    write_image_tree(tmp_path / "d" / "test", {"a": 1, "b": 1}, size=(16, 12))
    one_error_line(train_args(tmp_path / "d", tmp_path / "run"), capsys, "8x8", "16x12", "training", "test")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e40"])  # 1e40 overflows float32 to inf
def test_non_finite_csv_feature_is_refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    path = tmp_path / "v.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,{value},1\n5,6,0\n7,8,1\n")
    line = one_error_line(train_args(path, tmp_path / "run"), capsys, f"{path}:3", "column 'b'", repr(value))
    assert "learning rate" not in line  # found at load time, not reported as a divergence


def test_complex_npz_features_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x = np.ones((6, 3), dtype=np.complex128)
    x[2, 1] = 1 + 2j
    np.savez(tmp_path / "c.npz", x=x, y=np.array([0, 1] * 3))
    one_error_line(train_args(tmp_path / "c.npz", tmp_path / "run"), capsys, "c.npz", "complex", "(2, 1)")


def test_nan_npz_features_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x = np.zeros((6, 3), dtype=np.float64)
    x[4, 2] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=np.array([0, 1] * 3))
    one_error_line(train_args(tmp_path / "n.npz", tmp_path / "run"), capsys, "n.npz", "(4, 2)", "finite")


@pytest.mark.parametrize("label", ["1000000000000", "123456789012345678901234567890"])
def test_huge_csv_label_is_refused_without_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture, label: str
) -> None:
    path = tmp_path / "v.csv"
    path.write_text(f"a,label\n1,0\n2,1\n3,{label}\n")
    one_error_line(train_args(path, tmp_path / "run"), capsys, f"{path}:4", label, "100,000")


# 5. Exports that cannot be written ------------------------------------------------------------------------


def full_disk(handle: int, data: bytes) -> None:
    """The write guard's writer on a disk that fills half-way: a partial file, then ENOSPC."""
    os.write(handle, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("format", ["torchscript", "safetensors", "onnx"])
def test_export_on_a_full_disk_leaves_no_partial_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, format: str
) -> None:
    if format == "onnx":
        pytest.importorskip("onnxscript")
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / f"model.{format}"
    out.write_bytes(b"previous export")
    monkeypatch.setattr(guard, "_write_all", full_disk)
    argv = ["export", str(run_dir), "--format", format, "--out", str(out)]
    one_error_line(argv, capsys, f"cannot write {str(out)!r}: No space left on device")
    assert os.listdir(folder) == [out.name]  # no temporary file left behind
    assert out.read_bytes() == b"previous export"  # and the file that was there is untouched


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        argv = ["export", str(run_dir), "--format", "torchscript", "--out", str(folder / "m.pt")]
        one_error_line(argv, capsys, "cannot write", "Permission denied")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder)


def test_a_failed_cache_write_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import numpy as np

    from resnets.data import cache

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "save", full)
    cache.store_entry(tmp_path, "images", "k" * 32, {"x": np.zeros(3)}, {})
    assert list((tmp_path / "images").iterdir()) == []  # neither the entry nor its staging folder
