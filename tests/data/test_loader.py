"""BatchLoader: normalisation, layouts, epoch orders, and bit-exact resume mid-epoch."""

import pytest
import torch

from resnets.data import ArrayDataset, BatchAugment, BatchLoader
from resnets.errors import ConfigError


def _images(n: int = 10) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=g), torch.arange(n))


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def test_unshuffled_batches_are_normalised_inputs_in_order() -> None:
    data = _images()
    loader = BatchLoader(data, 4, shuffle=False, seed=0, mean=MEAN, std=STD)
    batches = list(loader.epoch_batches(0))
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (data.inputs[:4].float() / 255 - mean) / std
    assert torch.allclose(x, expected, atol=1e-6)
    assert len(BatchLoader(data, 4, shuffle=False, seed=0, mean=MEAN, std=STD, drop_last=True)) == 2


def test_shuffle_is_a_permutation_per_epoch_fixed_by_seed() -> None:
    loader = BatchLoader(_images(), 3, shuffle=True, seed=1, mean=MEAN, std=STD)
    order0 = torch.cat([y for _, y in loader.epoch_batches(0)])
    order1 = torch.cat([y for _, y in loader.epoch_batches(1)])
    assert sorted(order0.tolist()) == list(range(10)) and not torch.equal(order0, order1)
    again = BatchLoader(_images(), 3, shuffle=True, seed=1, mean=MEAN, std=STD)
    assert torch.equal(order0, torch.cat([y for _, y in again.epoch_batches(0)]))


def test_resume_mid_epoch_sees_exactly_the_uninterrupted_batches() -> None:
    def make() -> BatchLoader:
        return BatchLoader(_images(23), 4, shuffle=True, seed=11, augment=BatchAugment(), mean=MEAN, std=STD)

    full = list(make().epoch_batches(2))
    fresh = make()  # a new process after a restart: nothing carried over but (seed, epoch, start)
    resumed = list(fresh.epoch_batches(2, start=3))
    assert len(resumed) == len(full) - 3
    for (x_full, y_full), (x_res, y_res) in zip(full[3:], resumed):
        assert torch.equal(x_full, x_res) and torch.equal(y_full, y_res)
    other_epoch = list(make().epoch_batches(3))
    assert not torch.equal(full[0][0], other_epoch[0][0])


def test_layouts_vector_sequence_and_channels_last() -> None:
    data = _images(6)
    image = next(BatchLoader(data, 6, shuffle=False, seed=0, mean=MEAN, std=STD).epoch_batches(0))[0]
    vector = next(BatchLoader(data, 6, shuffle=False, seed=0, mean=MEAN, std=STD, layout="vector").epoch_batches(0))[0]
    seq = next(BatchLoader(data, 6, shuffle=False, seed=0, mean=MEAN, std=STD, layout="sequence").epoch_batches(0))[0]
    last = BatchLoader(data, 6, shuffle=False, seed=0, mean=MEAN, std=STD, channels_last=True)
    assert vector.shape == (6, 60) and torch.equal(vector, image.reshape(6, -1))
    assert seq.shape == (6, 4, 15)  # (B, H, C*W)
    assert torch.equal(seq[:, 2, 5:10], image[:, 1, 2, :])  # row 2 token holds channel 1's row 2 at [W:2W]
    x = next(last.epoch_batches(0))[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, image)


def test_vector_data_and_bad_options_are_refused() -> None:
    vectors = ArrayDataset(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), torch.tensor([0, 1]))
    x, _ = next(
        BatchLoader(
            vectors, 2, shuffle=False, seed=0, mean=(2.0, 20.0), std=(1.0, 10.0), layout="vector"
        ).epoch_batches(0)
    )
    assert x.tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    with pytest.raises(ConfigError, match="vector data .* needs layout='vector' and no augmentation"):
        BatchLoader(vectors, 2, shuffle=False, seed=0, mean=(0.0, 0.0), std=(1.0, 1.0))
    with pytest.raises(ConfigError, match="mean and std need 3 values"):
        BatchLoader(_images(), 2, shuffle=False, seed=0, mean=(0.5,), std=(0.2,))
    with pytest.raises(ConfigError, match=r"start must be in \[0, 5\]"):
        next(BatchLoader(_images(), 2, shuffle=False, seed=0, mean=MEAN, std=STD).epoch_batches(0, start=6))
