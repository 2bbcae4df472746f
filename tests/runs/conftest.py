"""Tiny run directories in the format `resnets train` writes, built without the training engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from resnets import create_model


def write_run(
    root: Path,
    *,
    model: str = "resnet20",
    classes: tuple[str, ...] = ("ant", "bee", "cat"),
    sample_shape: tuple[int, ...] = (1, 8, 8),
    mean: tuple[float, ...] = (0.5,),
    std: tuple[float, ...] = (0.25,),
    checkpoints: tuple[str, ...] = ("best", "last"),
    model_options: dict | None = None,
    val_size: int | None = None,
) -> Path:
    """A run directory with config.json and random-init checkpoints (the same weights in each)."""
    options = model_options or {}
    in_channels = sample_shape[0]
    net = create_model(model, num_classes=len(classes), in_channels=in_channels, **options)
    (root / "checkpoints").mkdir(parents=True)
    config = {
        "model": model, "model_options": options, "num_classes": len(classes), "in_channels": in_channels,
        "input_kind": net.input_kind, "seed": 0, "recipe": {"name": "test"},
        "data": {"spec": "test-data", "data_dir": None, "classes": list(classes), "mean": list(mean),
                 "std": list(std), "sample_shape": list(sample_shape), "flip": False, "image_size": None,
                 "val_size": val_size, "val_fraction": 0.0},
    }  # fmt: skip
    (root / "config.json").write_text(json.dumps(config))
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    for name in checkpoints:
        save_file(weights, str(root / "checkpoints" / f"{name}.safetensors"),
                  metadata={"model": model, "step": "0", "format": "resnets-checkpoint-1"})  # fmt: skip
    return root


@pytest.fixture
def make_run():
    """``make_run(path, **options)`` writes a run directory (see ``write_run``)."""
    return write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")
