"""Tiny data and a study context for instrument tests: every study runs end to end in seconds on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnets.studies import Context

CLASSES = ("left", "middle", "right")


def write_bars(root: Path, *, per_class: int = 8, size: int = 8, seed: int = 0) -> Path:
    """root/{train,test}/CLASS/*.png: a bright vertical band at the left, middle or right, with noise."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 90, (size, size), dtype=np.uint8)
                band = slice(label * size // 3, (label + 1) * size // 3)
                image[:, band] += 120
                Image.fromarray(image, "L").save(folder / f"{i}.png")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster, and on a shared 2-core machine two threads spin (~100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _gentle_study_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bars hold one batch of the study recipe per epoch, so its peak lr (0.4) arrives at the second step and
    kills resnet20's ReLUs within four; the tests train the instruments' runs at lr 0.05 instead."""
    import dataclasses

    from resnets.train.recipes import RECIPES

    monkeypatch.setitem(RECIPES, "study-fm", dataclasses.replace(RECIPES["study-fm"], lr=0.05))


@pytest.fixture(scope="session")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny learnable image tree (3 classes of 8x8 greyscale bands), with its decode cache kept apart."""
    previous = os.environ.get("RESNETS_CACHE_DIR")
    os.environ["RESNETS_CACHE_DIR"] = str(tmp_path_factory.mktemp("decoded-cache"))
    yield write_bars(tmp_path_factory.mktemp("bars"))
    if previous is None:
        os.environ.pop("RESNETS_CACHE_DIR", None)
    else:
        os.environ["RESNETS_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def batch_bars(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bands, 86 per class: a training split holding one batch of the study-fm recipe (256), the recipe
    of the instruments' default runs."""
    return write_bars(tmp_path_factory.mktemp("batch-bars"), per_class=86)


@pytest.fixture
def context(batch_bars: Path, tmp_path: Path) -> Context:
    """A quiet study context on the tiny data, writing into the test's own folder."""
    return Context(data=str(batch_bars), out=str(tmp_path / "out"), quiet=True)
