"""CIFAR-10 and CIFAR-100, "python version" (Krizhevsky 2009), from the folder or its .tar.gz.

The files are Python 2 pickles of dicts whose ``data`` is a numpy uint8 array (N, 3072) in (C, H, W) order.
Unpickling can run any code, so a restricted unpickler rebuilds only numpy arrays and refuses every other
global: a tampered file fails with a DataError instead of executing anything.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.data.dataset import ArrayDataset, reading
from resnets.errors import DataError

try:  # numpy >= 2 renamed numpy.core to numpy._core; files written by either name the old one
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"}
CIFAR100_FILES = {"train": ["train"], "test": ["test"], "meta": "meta"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused before it is loaded."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise DataError(
                f"refused to unpickle global {module}.{name}: CIFAR files only contain dicts, lists and numpy "
                "arrays, so this file was not written by the CIFAR release (it may be malicious)"
            ) from None


def safe_unpickle(data: bytes, source: str) -> Any:
    """Load a Python 2 pickle (``encoding='bytes'``) through :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
    except Exception as err:  # any malformed pickle: truncated, wrong opcodes, bad array state
        raise DataError(f"{source} is not a readable CIFAR pickle: {type(err).__name__}: {err}") from err


def _key(batch: dict, *names: str) -> Any:
    for name in names:
        for key in (name.encode(), name):
            if key in batch:
                return batch[key]
    raise KeyError(names[0])


def _text(values: list) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class _Source:
    """Read member files by base name from a CIFAR folder or a .tar.gz of it, without extracting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[str, tarfile.TarInfo] = {}
        self._tar: tarfile.TarFile | None = None
        if path.is_file():
            try:
                self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - held open for reads, closed by close()
            except (tarfile.TarError, OSError) as err:
                raise DataError(f"{path} is not a readable tar archive: {err}") from err
            with reading(path, "tar archive"):  # listing members decompresses the whole stream
                self._members = {Path(m.name).name: m for m in self._tar.getmembers() if m.isfile()}

    def has(self, name: str) -> bool:
        return name in self._members if self._tar else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if self._tar is None:
            return (self.path / name).read_bytes()
        with reading(self.path, "tar archive"):
            handle = self._tar.extractfile(self._members[name])
            assert handle is not None  # members are regular files
            return handle.read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _read_batches(source: _Source, names: list[str], label_key: str) -> ArrayDataset:
    images, labels = [], []
    for name in names:
        batch = safe_unpickle(source.read(name), f"{source.path}/{name}")
        try:
            data = np.asarray(_key(batch, "data"), dtype=np.uint8)
            batch_labels = np.asarray(_key(batch, label_key), dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{source.path}/{name}: expected a dict with 'data' and '{label_key}' ({err})") from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise DataError(
                f"{source.path}/{name}: expected data (N, 3072) and N labels, got {data.shape} and {len(batch_labels)}"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return ArrayDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def cifar_variant(path: Path) -> str | None:
    """ "cifar10", "cifar100" or None, from the member files of a CIFAR folder or archive."""
    source = _Source(path)
    try:
        if source.has(CIFAR10_FILES["meta"]):
            return "cifar10"
        if all(source.has(n) for n in ("meta", "train", "test")):
            return "cifar100"
        return None
    finally:
        source.close()


def load_cifar(path: Path, variant: str) -> tuple[list[str], ArrayDataset, ArrayDataset]:
    """Class names, train and test of CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (fine labels)."""
    files = CIFAR10_FILES if variant == "cifar10" else CIFAR100_FILES
    source = _Source(path)
    try:
        missing = [n for n in [*files["train"], *files["test"], files["meta"]] if not source.has(n)]
        if missing:
            raise DataError(
                f"{path} is not a complete {variant} python-version folder or archive: missing {', '.join(missing)}"
            )
        meta = safe_unpickle(source.read(files["meta"]), f"{path}/{files['meta']}")
        names_key, label_key = (
            ("label_names", "labels") if variant == "cifar10" else ("fine_label_names", "fine_labels")
        )
        try:
            classes = _text(list(_key(meta, names_key)))
        except (KeyError, TypeError) as err:
            raise DataError(f"{path}/{files['meta']}: expected a dict with '{names_key}'") from err
        train = _read_batches(source, files["train"], label_key)
        test = _read_batches(source, files["test"], label_key)
    finally:
        source.close()
    return classes, train, test


def find_cifar(data_dir: Path, variant: str) -> Path:
    """The CIFAR folder or archive for ``variant`` in ``data_dir`` (or ``data_dir`` itself)."""
    folder, archive = (
        ("cifar-10-batches-py", "cifar-10-python.tar.gz")
        if variant == "cifar10"
        else ("cifar-100-python", "cifar-100-python.tar.gz")
    )
    for candidate in (data_dir, data_dir / folder, data_dir / archive):
        if candidate.exists() and cifar_variant(candidate) == variant:
            return candidate
    raise DataError(
        f"no {variant} data in {data_dir}: expected {folder}/ or {archive} there (the 'python version' from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), or --data-dir naming the folder itself"
    )
