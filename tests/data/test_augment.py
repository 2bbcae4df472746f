"""Batched pad-crop-flip: shapes, zero padding, exact mirroring, determinism."""

import torch

from resnets.data import BatchAugment


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draws(batch: int, pad: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The offsets and flips BatchAugment draws, re-drawn from the same seed."""
    g = _gen(seed)
    return torch.randint(0, 2 * pad + 1, (batch, 2), generator=g), torch.randint(0, 2, (batch,), generator=g).bool()


def test_each_sample_is_its_own_crop_of_the_zero_padded_image() -> None:
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros inside: zeros mean padding
    out = BatchAugment(pad=4, flip=True)(images, _gen(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets, mirror = _draws(16, 4, 3)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):
        dy, dx = offsets[i].tolist()
        crop = padded[i, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[i], crop.flip(-1) if mirror[i] else crop)
        zero_rows = max(0, 4 - dy) + max(0, dy - 4)
        zero_cols = max(0, 4 - dx) + max(0, dx - 4)
        assert int((out[i, 0] == 0).sum()) == 8 * (zero_rows + zero_cols) - zero_rows * zero_cols
    assert mirror.any() and not mirror.all() and len({tuple(o) for o in offsets.tolist()}) > 4


def test_flip_only_mirrors_exactly_and_flip_off_never_does() -> None:
    images = torch.rand(32, 2, 5, 7)
    out = BatchAugment(pad=0, flip=True)(images, _gen(0))
    _, mirror = _draws(32, 0, 0)
    assert torch.equal(out[mirror], images[mirror].flip(-1)) and torch.equal(out[~mirror], images[~mirror])
    assert torch.equal(BatchAugment(pad=0, flip=False)(images, _gen(0)), images)


def test_same_seed_same_result_other_seed_differs() -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    augment = BatchAugment()
    assert torch.equal(augment(images, _gen(5)), augment(images, _gen(5)))
    assert not torch.equal(augment(images, _gen(5)), augment(images, _gen(6)))
