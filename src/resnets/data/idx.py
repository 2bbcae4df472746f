"""IDX files (LeCun's MNIST format, also used by Fashion-MNIST), raw or gzipped.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values. Gzip is recognised by its magic bytes, not the file name.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnets.data.dataset import ArrayDataset, reading
from resnets.errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

#: Pixel statistics of each release's training images: (mean pixel in [0, 1], fraction of pixels that are 0).
#: Fashion-MNIST's were measured on Debian's dataset-fashion-mnist (0.2860, 0.502); MNIST's are its well-known mean
#: 0.1307 and its ~19% inked pixels. Digits are thin strokes on black, garments fill much of the frame.
RELEASE_STATS = {"MNIST": (0.1307, 0.81), "Fashion-MNIST": (0.2860, 0.50)}
STATS_TOLERANCE = (0.05, 0.10)  # how far a subset or a re-encoded copy may stray from them (the windows are apart)

# type code -> big-endian numpy dtype (the IDX specification's table)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# train-images-idx3-ubyte[.gz], also the "train-images.idx3-ubyte" spelling of some mirrors
_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's contents, decompressed when it starts with the gzip magic bytes."""
    with reading(path, "gzip file"):
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw


def is_idx_header(head: bytes) -> bool:
    """Whether ``head`` (the first 4 bytes, decompressed) looks like an IDX magic number."""
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _DTYPES and 1 <= head[3] <= 4


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file, checking its magic number and that its size matches its dimensions."""
    data = read_bytes(path)
    if not is_idx_header(data[:4]):
        raise DataError(f"{path} is not an IDX file: magic bytes {data[:4].hex()} (expected 0000 08 01..04)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: header says dims {dims} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """Map ("train" | "t10k", "images" | "labels") to the IDX files in ``folder``."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.setdefault((match.group(1), match.group(2)), path)
    return found


def _split(images_path: Path, labels_path: Path) -> ArrayDataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of dims (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels of dims (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels; "
            "the files must come from the same release"
        )
    inputs = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W)
    return ArrayDataset(inputs, torch.from_numpy(labels.astype(np.int64)))


def load_idx_folder(folder: Path) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Train (required) and test (optional) splits from the four MNIST-style IDX files in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"IDX data folder {folder} does not exist")
    found = find_idx_files(folder)
    missing = [f"{s}-{k}" for s in ("train",) for k in ("images", "labels") if (s, k) not in found]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)}-idx?-ubyte[.gz]; expected train-images-idx3-ubyte and "
            "train-labels-idx1-ubyte (optionally t10k-* for the test split), raw or gzipped"
        )
    train = _split(found["train", "images"], found["train", "labels"])
    test_parts = [found.get(("t10k", k)) for k in ("images", "labels")]
    if any(test_parts) and not all(test_parts):
        raise DataError(f"{folder} has only one of t10k-images / t10k-labels; both are needed for a test split")
    test = _split(test_parts[0], test_parts[1]) if all(test_parts) else None  # type: ignore[arg-type]
    return train, test


@dataclass(frozen=True)
class PixelLook:
    """What 28x28 grey training images look like: which release, if any, and the statistics that say so."""

    release: str | None  # a key of RELEASE_STATS, or None when the pixels match none of them
    mean: float  # mean pixel in [0, 1]
    zeros: float  # fraction of pixels that are exactly 0

    def describe(self) -> str:
        return f"mean pixel {self.mean:.3f}, {self.zeros:.0%} zero pixels"


def recognise(images: torch.Tensor) -> PixelLook:
    """Tell MNIST from Fashion-MNIST by the pixels of uint8 images (N, 1, H, W), not by any file or folder name.

    Only 28x28 single-channel images can be either. One 256-bin histogram of all pixels: 0.1 s for 60,000 images.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or not len(images):
        return PixelLook(None, float("nan"), float("nan"))
    counts = torch.bincount(images.reshape(-1), minlength=256).to(torch.float64)
    total = float(counts.sum())
    mean = float(counts @ torch.arange(256, dtype=torch.float64)) / 255.0 / total
    zeros = float(counts[0]) / total
    for release, (ref_mean, ref_zeros) in RELEASE_STATS.items():
        if abs(mean - ref_mean) <= STATS_TOLERANCE[0] and abs(zeros - ref_zeros) <= STATS_TOLERANCE[1]:
            return PixelLook(release, mean, zeros)
    return PixelLook(None, mean, zeros)
