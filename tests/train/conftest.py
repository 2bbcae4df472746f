"""A tiny registered model and a tiny learnable data set, so a whole run takes a second on 2 cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.models import list_models, register_model
from resnets.models.resnet import ResNet, ResNetConfig

# One thread: on a shared 2-core machine OpenMP workers spin against other processes, and tiny tensors
# gain nothing from threads (a batch-norm call went from ~90 ms to well under 1 ms).
torch.set_num_threads(1)

TINY = "tiny_resnet_train_tests"
TINY_CONFIG = ResNetConfig(block="basic", layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, shortcut="A")

if TINY not in list_models():
    register_model(
        TINY,
        ResNet,
        TINY_CONFIG,
        num_classes=2,
        input_size=(1, 8, 8),
        family="test",
        description="two-stage ResNet with 4 and 8 channels, for training tests",
    )


def tiny_bundle(n_train: int = 96, n_test: int = 32, channels: int = 1, val: int = 0):
    """Two classes told apart by which half of an 8x8 image is bright; noise makes it non-trivial."""
    from resnets.data import ArrayDataset, DataBundle

    generator = torch.Generator().manual_seed(123)

    def split(n: int) -> ArrayDataset:
        targets = torch.randint(0, 2, (n,), generator=generator)
        images = torch.randint(0, 90, (n, channels, 8, 8), generator=generator)
        bright = torch.zeros(n, channels, 8, 8, dtype=torch.bool)
        bright[targets == 0, :, :, :4] = True
        bright[targets == 1, :, :, 4:] = True
        images = torch.where(bright, images + 120, images).to(torch.uint8)
        return ArrayDataset(images, targets.to(torch.int64))

    train, test = split(n_train), split(n_test)
    mean, std = (0.35,) * channels, (0.3,) * channels
    val_split = split(val) if val else None
    return DataBundle("tiny", "image", ["left", "right"], train, test, val_split, mean, std, False, 0)


@pytest.fixture
def bundle():
    return tiny_bundle()


def tiny_config(out, **recipe_overrides):
    from resnets.train import TrainConfig, apply_overrides

    overrides = {
        "recipe": "fast",
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "augment": True,
        "weight_decay": 5e-4,
        **recipe_overrides,
    }
    config = apply_overrides(
        TrainConfig(model=TINY, data="tiny", seed=7, device="cpu", quiet=True, out=str(out)), overrides
    )
    return config


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """root/{train,test}/{left,right}/*.png: gray 8x8 images, bright on the side that names the class
    (24 + 24 training images: 6 steps per epoch at batch 8)."""
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for label, cls in enumerate(("left", "right")):
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 90, (8, 8)).astype(np.uint8)
                image[:, 4 * label : 4 * label + 4] += 120
                Image.fromarray(image, mode="L").save(tmp_path / "tree" / split / cls / f"{i}.png")
    return tmp_path / "tree"
