"""CIFAR python-version batches: folder and .tar.gz, both variants, and the restricted unpickler."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.data import load_data
from resnets.data.cifar import safe_unpickle
from resnets.errors import DataError

from .formats import py2_pickle, tar_gz, write_cifar10, write_cifar100


@pytest.mark.parametrize("archived", [False, True])
def test_cifar10_folder_and_archive_give_the_written_images(tmp_path: Path, archived: bool) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py")
    if archived:
        tar_gz(tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
        (tmp_path / "cifar-10-batches-py").rename(tmp_path / "moved-away")  # only the archive is found
    bundle = load_data("cifar10", tmp_path)
    assert bundle.classes == written["names"] and bundle.flip is True
    assert len(bundle.train) == 20 and len(bundle.test) == 3 and bundle.sample_shape == (3, 32, 32)
    first = torch.from_numpy(written["train"][0][0][1].reshape(3, 32, 32))
    assert torch.equal(bundle.train.inputs[1], first)  # (C, H, W) order of the 3072 bytes
    last_labels = written["train"][4][1]
    assert bundle.train.targets[-4:].tolist() == last_labels
    assert bundle.test.targets.tolist() == written["test"][1]


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path / "cifar-100-python")
    bundle = load_data("cifar100", tmp_path)
    assert len(bundle.classes) == 100 and bundle.classes[7] == "fine007"
    assert bundle.train.targets.tolist() == written["train"][1]
    assert np.array_equal(bundle.test.inputs.reshape(4, -1).numpy(), written["test"][0])


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_calling_os_system_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(py2_pickle({"data": _Exploit(marker)}))
    with pytest.raises(DataError, match=r"data_batch_3: refused to unpickle global (posix|os|nt)\.system"):
        load_data("cifar10", tmp_path / "c")
    assert not marker.exists()


def test_other_globals_are_refused_too() -> None:
    payload = py2_pickle({"x": 1}).replace(b"}", b"cbuiltins\neval\n)R", 1)  # not a valid dict any more, but eval first
    with pytest.raises(DataError, match=r"refused to unpickle global builtins\.eval"):
        safe_unpickle(payload, "crafted")


def test_garbage_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(DataError, match="test_batch is not a readable CIFAR pickle"):
        load_data("cifar10", tmp_path / "c")


def test_missing_cifar_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no cifar100 data in .*cifar-100-python/ or cifar-100-python.tar.gz"):
        load_data("cifar100", tmp_path)
