"""Containers, statistics and the seeded validation split."""

import pytest
import torch

from resnets.data import ArrayDataset
from resnets.data.dataset import channel_stats, make_bundle, split_validation
from resnets.errors import ConfigError, DataError


def _toy(n: int = 100) -> ArrayDataset:
    return ArrayDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 3)


def test_split_is_seeded_disjoint_and_complete() -> None:
    data = _toy()
    train, val = split_validation(data, val_size=20, seed=7)
    again, val_again = split_validation(data, val_size=20, seed=7)
    _, other = split_validation(data, val_size=20, seed=8)
    ids_train, ids_val = set(train.inputs[:, 0].tolist()), set(val.inputs[:, 0].tolist())
    assert len(val) == 20 and len(train) == 80
    assert ids_train.isdisjoint(ids_val) and ids_train | ids_val == set(range(100))
    assert torch.equal(val.inputs, val_again.inputs) and torch.equal(train.inputs, again.inputs)
    assert not torch.equal(val.inputs, other.inputs)
    assert torch.equal(val.targets, val.inputs[:, 0].long() % 3)  # inputs and targets stay aligned


def test_split_options_are_checked() -> None:
    assert split_validation(_toy(), val_fraction=0.0)[1] is None
    assert len(split_validation(_toy(), val_fraction=0.25)[1]) == 25
    with pytest.raises(ConfigError, match="give one of them"):
        split_validation(_toy(), val_fraction=0.1, val_size=5)
    with pytest.raises(ConfigError, match="between 1 and 99"):
        split_validation(_toy(), val_size=100)


def test_image_stats_are_per_channel_in_unit_range() -> None:
    images = torch.zeros(2, 2, 1, 2, dtype=torch.uint8)
    images[:, 0] = 255  # channel 0 constant white: std falls back to 1
    images[0, 1], images[1, 1] = 0, 51
    mean, std = channel_stats(images, "image")
    assert mean == pytest.approx((1.0, 0.1)) and std == pytest.approx((1.0, 0.1))


def test_bundle_stats_come_from_train_after_the_split_and_describe() -> None:
    inputs = torch.arange(10, dtype=torch.float32)[:, None]
    bundle = make_bundle(
        "toy", "vector", ["a", "b"], ArrayDataset(inputs, torch.arange(10) % 2), None, flip=True, val_size=4, seed=0
    )
    assert bundle.mean[0] == pytest.approx(bundle.train.inputs.mean().item())
    assert bundle.flip is False  # never for vectors
    assert bundle.describe() == "toy: vector 1, 2 classes (a, b); train 4, val 4, test 2"  # a fifth held out as test
    with pytest.raises(DataError, match=r"3 inputs but 2 targets"):
        ArrayDataset(torch.zeros(3, 1), torch.zeros(2, dtype=torch.long))
