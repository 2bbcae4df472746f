"""Real run directories, made by `resnets train` itself on tiny image folders, for eval/predict/export tests.

Each distinct run is trained once per test session (two steps of resnet20 on 8x8 images: about a second)
and every test gets its own copy, so a test may write into it or damage it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnets.cli import main

CLASSES = ("ant", "bee", "cat")


def write_image_tree(
    root: Path,
    classes: tuple[str, ...] = CLASSES,
    *,
    size: int = 8,
    channels: int = 1,
    per_class: int = 4,
    seed: int = 0,
) -> Path:
    """root/{train,test}/CLASS/*.png in the image-folder format the data package reads."""
    rng = np.random.default_rng(seed)
    mode = {1: "L", 3: "RGB"}[channels]
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size, size) if channels == 1 else (size, size, channels)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")
    return root


def train_run(root: Path, *, channels: int = 1, size: int = 8, args: tuple[str, ...] = ()) -> Path:
    """Train a two-step resnet20 run with the CLI on a fresh image tree under ``root``; returns the run dir."""
    data = write_image_tree(root / "data", size=size, channels=channels)
    run = root / "run"
    command = [
        "train",
        "--model",
        "resnet20",
        "--data",
        str(data),
        "--out",
        str(run),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
        *args,
    ]
    assert main(command) == 0
    return run


@pytest.fixture(scope="session")
def _run_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    previous = os.environ.get("RESNETS_CACHE_DIR")
    os.environ["RESNETS_CACHE_DIR"] = str(tmp_path_factory.mktemp("decoded-cache"))
    yield {"root": tmp_path_factory.mktemp("runs"), "runs": {}}
    if previous is None:
        os.environ.pop("RESNETS_CACHE_DIR", None)
    else:
        os.environ["RESNETS_CACHE_DIR"] = previous


@pytest.fixture
def trained_run(_run_cache: dict, tmp_path: Path) -> Callable[..., Path]:
    """``trained_run(channels=1, size=8, args=("--val-size", "3"))``: a copy of a real run directory."""

    def make(*, channels: int = 1, size: int = 8, args: tuple[str, ...] = ()) -> Path:
        key = (channels, size, tuple(args))
        if key not in _run_cache["runs"]:
            root = _run_cache["root"] / f"run{len(_run_cache['runs'])}"
            _run_cache["runs"][key] = train_run(root, channels=channels, size=size, args=tuple(args))
        copy = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
        shutil.copytree(_run_cache["runs"][key], copy)
        return copy

    return make


@pytest.fixture
def run_dir(trained_run: Callable[..., Path]) -> Path:
    return trained_run()
