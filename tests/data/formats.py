"""Writers of small files in the exact on-disk formats the readers accept, for tests to load back."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False, dims: tuple[int, ...] | None = None) -> Path:
    """An IDX file: 00 00 08 ndim, big-endian uint32 dims, then the uint8 values (``dims`` may lie)."""
    shape = array.shape if dims is None else dims
    data = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist_folder(folder: Path, n_train: int = 12, n_test: int = 5, *, compress: bool = True, seed: int = 0):
    """The four MNIST-named IDX files, with random 28x28 images and labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    parts = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        parts[split] = (images, labels)
    return parts


class Py2Pickler(pickle._Pickler):
    """Writes protocol 2 the way Python 2 did for CIFAR: str and bytes as BINSTRING, numpy.core globals."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("utf-8") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_arrays(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [i % num_classes for i in range(n)]


def write_cifar10(folder: Path, per_batch: int = 4, n_test: int = 3) -> dict:
    """cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": names, "num_vis": 3072, "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    written = {"names": names, "train": [], "test": None}
    for i in range(1, 6):
        data, labels = cifar_arrays(per_batch, 10, seed=i)
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": labels,
            "data": data,
            "filenames": ["x.png"] * per_batch,
        }
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(batch))
        written["train"].append((data, labels))
    data, labels = cifar_arrays(n_test, 10, seed=99)
    test = {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data}
    (folder / "test_batch").write_bytes(py2_pickle(test))
    written["test"] = (data, labels)
    return written


def write_cifar100(folder: Path, n_train: int = 6, n_test: int = 4) -> dict:
    """cifar-100-python: train, test, meta (fine and coarse label names)."""
    folder.mkdir(parents=True, exist_ok=True)
    fine = [f"fine{i:03d}" for i in range(100)]
    meta = {"fine_label_names": fine, "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    written = {"names": fine}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        data, labels = cifar_arrays(n, 100, seed)
        labels = [(7 * i + 3) % 100 for i in range(n)]
        batch = {"data": data, "fine_labels": labels, "coarse_labels": [x // 5 for x in labels], "filenames": ["a"] * n}
        (folder / split).write_bytes(py2_pickle(batch))
        written[split] = (data, labels)
    return written


def tar_gz(folder: Path, archive: Path) -> Path:
    """A .tar.gz holding ``folder`` under its own name, as the official CIFAR archives do."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Save (H, W) or (H, W, 3) uint8 pixels; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_image_tree(
    root: Path,
    classes: dict[str, int],
    *,
    size: tuple[int, int] = (8, 6),
    ext: str = ".png",
    gray: bool = False,
    seed: int = 0,
) -> dict[Path, np.ndarray]:
    """root/CLASS/NNN.ext with random pixels (lossless by default, so tests can compare exact values)."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        for i in range(count):
            shape = size if gray else (*size, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            written[write_image(root / name / f"{i:03d}{ext}", pixels)] = pixels
    return written
