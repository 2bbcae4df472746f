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


def _before_erasing(images: torch.Tensor, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """BatchAugment.__call__ as it was before random erasing existed (on the CPU): the reference for p = 0."""
    batch, _, height, width = images.shape
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    mirror = torch.randint(0, 2, (batch,), generator=generator).bool() & flip
    rows = offsets[:, :1] + torch.arange(height)
    cols = offsets[:, 1:] + torch.arange(width)
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    padded = torch.nn.functional.pad(images, (pad,) * 4) if pad else images
    padded = padded.permute(0, 2, 3, 1)
    sample = torch.arange(batch)[:, None, None]
    out = padded[sample, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def test_without_erasing_the_batch_and_the_random_stream_are_exactly_as_before() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    for pad, flip in [(4, True), (0, True), (2, False)]:
        new, old = _gen(11), _gen(11)
        assert torch.equal(BatchAugment(pad=pad, flip=flip)(images, new), _before_erasing(images, old, pad, flip))
        assert torch.equal(new.get_state(), old.get_state())  # nothing more was drawn


def _erased_boxes(out: torch.Tensor, before: torch.Tensor) -> list[tuple[int, int]]:
    """(area, box area) of the changed pixels of each image; changes must be the same in every channel."""
    found = []
    for changed in out != before:  # (C, H, W)
        assert all(torch.equal(changed[0], c) for c in changed)
        rows, cols = changed[0].any(1).nonzero(), changed[0].any(0).nonzero()
        box = int(rows.max() - rows.min() + 1) * int(cols.max() - cols.min() + 1) if len(rows) else 0
        found.append((int(changed[0].sum()), box))
    return found


def test_erasing_with_probability_1_puts_one_noise_box_of_2_to_33_percent_in_every_image() -> None:
    height, width = 16, 20
    images = torch.full((64, 3, height, width), -1.0)  # noise is in [0, 1): every erased pixel changes
    out = BatchAugment(pad=0, flip=False, erase=1.0)(images, _gen(2))
    boxes = _erased_boxes(out, images)
    for area, box in boxes:
        assert area == box and 0.02 <= area / (height * width) <= 1 / 3  # one filled rectangle of that size
    assert len({area for area, _ in boxes}) > 20  # sizes (and shapes) vary
    noise = out[out != -1]
    assert 0 <= float(noise.min()) and float(noise.max()) < 1 and abs(float(noise.mean()) - 0.5) < 0.02


def test_erasing_comes_after_the_crop_and_flip_and_fills_uint8_images_with_uint8_noise() -> None:
    shape, augment = (32, 3, 12, 12), BatchAugment(pad=2, flip=True, erase=1.0)
    images = torch.randint(1, 256, shape, dtype=torch.uint8)
    before = BatchAugment(pad=2, flip=True)(images, _gen(5))
    out = augment(images, _gen(5))
    assert out.dtype == torch.uint8
    # the same draws on float images (they only differ in the noise, drawn last) show where the boxes are
    floats = images.float() + 10.0  # away from [0, 1), where the noise lies
    box = augment(floats, _gen(5)) != BatchAugment(pad=2, flip=True)(floats, _gen(5))
    assert torch.equal(out[~box], before[~box]) and not torch.equal(out[box], before[box])
    assert all(0.02 <= area / 144 <= 1 / 3 for area, _ in _erased_boxes(box.float(), torch.zeros(shape)))


def test_erasing_probability_is_the_share_of_images_erased() -> None:
    images = torch.full((400, 1, 16, 16), -1.0)
    out = BatchAugment(pad=0, flip=False, erase=0.5)(images, _gen(9))
    erased = int((out != -1).flatten(1).any(1).sum())
    assert 170 <= erased <= 230  # 200 expected; binomial sd 10
