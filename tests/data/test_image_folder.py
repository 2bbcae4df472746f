"""Image trees: layouts, colour modes, resizing, bad files, empty classes and the decode cache."""

import io
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.data import image_folder, load_data
from resnets.errors import DataError

from .formats import write_image, write_image_tree


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(cache))
    return cache


def test_train_test_tree_sorted_classes_exact_pixels(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "d" / "train", {"dog": 2, "cat": 3}, seed=1)
    write_image_tree(tmp_path / "d" / "test", {"cat": 1, "dog": 1}, seed=2)
    bundle = load_data(tmp_path / "d")
    assert bundle.classes == ["cat", "dog"]  # alphabetical, like torchvision ImageFolder
    assert bundle.sample_shape == (3, 8, 6) and bundle.flip is True
    assert bundle.train.targets.tolist() == [0, 0, 0, 1, 1] and bundle.test.targets.tolist() == [0, 1]
    first_dog = train[tmp_path / "d" / "train" / "dog" / "000.png"]
    assert torch.equal(bundle.train.inputs[3], torch.from_numpy(first_dog).permute(2, 0, 1))


def test_single_tree_holds_out_a_seeded_test_fifth_then_the_validation_fraction(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "d", {"a": 5, "b": 5})
    bundle = load_data(tmp_path / "d", val_fraction=0.3, seed=4)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 2, 2)  # 10 -> 2 test; 8 -> 2 val
    images = [tuple(map(bytes, split.inputs.flatten(1).numpy())) for split in (bundle.train, bundle.val, bundle.test)]
    assert sum(len(set(part)) for part in images) == 10  # the three splits are disjoint and cover the tree
    again = load_data(tmp_path / "d", val_fraction=0.3, seed=4)
    assert torch.equal(again.test.inputs, bundle.test.inputs)  # the same seed holds out the same images


def test_all_grayscale_stays_one_channel_mixed_becomes_rgb(tmp_path: Path) -> None:
    gray = write_image_tree(tmp_path / "g", {"a": 2, "b": 1}, gray=True)
    assert load_data(tmp_path / "g", test_fraction=0).sample_shape == (1, 8, 6)
    pixels = next(iter(gray.values()))
    write_image_tree(tmp_path / "g", {"c": 1})  # one colour image among grey ones
    bundle = load_data(tmp_path / "g", test_fraction=0)
    assert bundle.sample_shape == (3, 8, 6)
    assert torch.equal(bundle.train.inputs[0], torch.from_numpy(pixels)[None].expand(3, 8, 6))


def test_mixed_sizes_need_image_size_then_resize(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "d", {"a": 1}, size=(8, 6))
    write_image_tree(tmp_path / "d", {"b": 1}, size=(5, 7), ext=".jpg")
    with pytest.raises(
        DataError, match=r"different sizes \(5x7, 8x6\); resize them with --image-size PIXELS \(image_size= in Python\)"
    ):
        load_data(tmp_path / "d")
    assert load_data(tmp_path / "d", image_size=4).sample_shape == (3, 4, 4)


def test_corrupt_images_are_logged_skipped_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_image_tree(tmp_path / "d", {"a": 3, "b": 3})
    broken = tmp_path / "d" / "b" / "zz.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with caplog.at_level(logging.WARNING, logger="resnets.data"):
        bundle = load_data(tmp_path / "d", test_fraction=0)
    assert bundle.skipped_files == 1 and len(bundle.train) == 6
    assert str(broken) in caplog.text
    assert "1 unreadable files skipped" in bundle.describe()


def test_too_many_corrupt_images_fail(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "d", {"a": 1, "b": 1})
    for i in range(3):
        (tmp_path / "d" / "a" / f"bad{i}.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"3 of 5 images .* \(more than the 2 tolerated"):
        load_data(tmp_path / "d", max_bad_files=2)
    assert load_data(tmp_path / "d", max_bad_files=3).skipped_files == 3


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "d", {"a": 1, "b": 1})
    (tmp_path / "d" / "empty").mkdir()
    (tmp_path / "d" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*empty holds no images"):
        load_data(tmp_path / "d", test_fraction=0)


def test_cache_is_reused_and_invalidated_by_changes(
    tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_tree(tmp_path / "d", {"a": 2, "b": 2})
    first = load_data(tmp_path / "d", test_fraction=0)
    entries = list((_private_cache / "image-folder").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()

    def no_decoding(*args: object) -> None:
        raise AssertionError("a cache hit must not decode")

    with monkeypatch.context() as patch:
        patch.setattr(image_folder, "decode_all", no_decoding)
        again = load_data(tmp_path / "d", test_fraction=0)
    assert torch.equal(again.train.inputs, first.train.inputs) and again.skipped_files == 0
    write_image(tmp_path / "d" / "b" / "new.png", np.zeros((8, 6, 3), np.uint8))
    assert len(load_data(tmp_path / "d", test_fraction=0).train) == 5
    assert len(list((_private_cache / "image-folder").iterdir())) == 2


def test_tar_gz_of_a_tree_loads_like_the_folder(tmp_path: Path) -> None:
    import tarfile

    write_image_tree(tmp_path / "d" / "train", {"x": 2, "y": 1})
    write_image_tree(tmp_path / "d" / "test", {"y": 1}, seed=3)
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / "d" / split, arcname=split)
    folder, archive = load_data(tmp_path / "d"), load_data(tmp_path / "tree.tar.gz")
    assert archive.classes == ["x", "y"]
    assert torch.equal(archive.train.inputs, folder.train.inputs)
    assert torch.equal(archive.test.inputs, folder.test.inputs)


def test_first_decode_shows_progress_unless_quiet_cached_or_small(
    tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    write_image_tree(tmp_path / "d", {"a": 2, "b": 2})
    root = (tmp_path / "d").resolve()
    load_data(tmp_path / "d", test_fraction=0)
    assert capsys.readouterr().err == ""  # 4 files: too few to wait for
    monkeypatch.setattr(image_folder, "_PROGRESS_FROM", 4)
    shutil.rmtree(_private_cache)
    load_data(tmp_path / "d", test_fraction=0, progress=False)
    assert capsys.readouterr().err == ""  # the caller said quiet
    shutil.rmtree(_private_cache)

    load_data(tmp_path / "d", test_fraction=0)  # stderr is not a terminal here: a line per quarter
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"decoding 4 images in {root}"
    shown = [re.fullmatch(rf"decoding {re.escape(str(root))}: (\d+)% \((\d)/4, \d+ s\)", line) for line in lines[1:]]
    assert [m.groups() for m in shown if m] == [("25", "1"), ("50", "2"), ("75", "3"), ("100", "4")]
    assert len(lines) == 5

    load_data(tmp_path / "d", test_fraction=0)
    assert capsys.readouterr().err == ""  # a cached load decodes nothing

    shutil.rmtree(_private_cache)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load_data(tmp_path / "d", test_fraction=0)
    bar = terminal.getvalue()
    assert f"decoding {root}: 100%" in bar and "4/4" in bar and "\r" in bar  # tqdm's bar, drawn in place
    assert "images in" not in bar  # and none of the plain lines


def test_decode_all_ticks_once_per_image_in_the_process_pool_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = write_image_tree(tmp_path / "d", {"a": 3, "b": 2})
    sources = [str(path) for path in images]
    monkeypatch.setattr(image_folder, "_PARALLEL_FROM", 2)  # the forked pool, as for 4,000+ files
    ticks: list[int] = []
    results = image_folder.decode_all(sources, None, workers=2, tick=ticks.append)
    assert ticks == [1] * 5
    assert all(np.array_equal(result, images[Path(source)]) for result, source in zip(results, sources))
