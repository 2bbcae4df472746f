"""Image-folder trees: ``root/CLASS/*.png`` or ``root/{train,test}/CLASS/*.jpg``, also inside a .tar(.gz).

Classes are the sorted folder names, as in torchvision's ImageFolder. Images are decoded with Pillow to RGB,
or to L when every image is grayscale. Decoding 60,000 small JPEGs takes ~15 s on one core, so the decoded
uint8 arrays are cached on disk (see :mod:`resnets.data.cache`) and later loads take well under a second.
That first decode shows its progress on stderr (a bar on a terminal, a line per quarter in a log), unless the
caller passes ``progress=False``.

Unreadable images are logged with their path, skipped and counted. The load fails once more than
``max_bad_files`` are bad; by default that is ``max(10, 1% of the files)``, so a few damaged files in a large
tree do not stop a run but a tree that is mostly broken (a wrong folder, a failed copy) does.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from resnets.data import cache
from resnets.data.dataset import ArrayDataset, reading
from resnets.errors import DataError
from resnets.io.resources import check_memory

log = logging.getLogger("resnets.data")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "test")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)
_PARALLEL_FROM = 4000  # below this many files a process pool costs more than it saves
_MAX_LOGGED = 20
_PROGRESS_FROM = 500  # fewer files decode in about 3 s or less: no progress shown


@dataclass(frozen=True)
class ImageFile:
    split: str  # "train" | "test"; a single tree is all "train"
    label: str  # the class folder's name
    source: str  # file path, or member name inside an archive
    stamp: tuple[int, int] = (0, 0)  # (size, mtime in ns) of a file on disk: part of the cache key


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def default_max_bad(n_files: int) -> int:
    """How many unreadable files a load tolerates when the caller does not say: max(10, 1%)."""
    return max(10, n_files // 100)


def _class_dirs(folder: Path) -> list[Path]:
    with _listing(folder) as entries:
        return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and _is(e, "dir"))


def _image_entries(folder: Path) -> list[os.DirEntry]:
    with _listing(folder) as entries:  # scandir: no stat per file until asked, much faster than pathlib
        return sorted((e for e in entries if is_image(e.name) and _is(e, "file")), key=lambda e: e.name)


@contextmanager
def _listing(folder: Path) -> Iterator[list[os.DirEntry]]:
    """The entries of ``folder``; a folder that cannot be listed (no permission, a link loop) is one DataError."""
    try:
        with os.scandir(folder) as entries:
            yield list(entries)
    except OSError as error:
        raise DataError(f"cannot read the folder {str(folder)!r}: {error.strerror or error}") from None


def _is(entry: os.DirEntry, kind: str) -> bool:
    """Whether ``entry`` is a folder (or file), following links; a link loop is refused by name, not a traceback
    (a dangling link is neither, and is skipped like any other non-image)."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError as error:
        raise DataError(
            f"{entry.path!r} cannot be followed ({error.strerror or error}): a symlink loop or a broken folder in "
            "the image tree; remove it"
        ) from None


def looks_like_image_tree(root: Path) -> bool:
    """Whether ``root`` is a tree of class folders (directly, or under ``train/``) holding images."""
    base = root / "train" if (root / "train").is_dir() else root
    for class_dir in _class_dirs(base):
        if _image_entries(class_dir):
            return True
    return False


def scan_tree(root: Path) -> list[ImageFile]:
    """Every image file of a tree, in a fixed order; an empty class folder is an error naming it."""
    splits = [(s, root / s) for s in SPLITS if (root / s).is_dir()] if (root / "train").is_dir() else [("train", root)]
    files: list[ImageFile] = []
    for split, folder in splits:
        class_dirs = _class_dirs(folder)
        if not class_dirs:
            raise DataError(f"{folder} has no class folders; expected {folder}/CLASS/*.png|jpg|jpeg|bmp|webp")
        for class_dir in class_dirs:
            entries = _image_entries(class_dir)
            if not entries:
                raise DataError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "remove it or add its images"
                )
            for entry in entries:
                try:
                    stat = entry.stat()
                except OSError as error:  # removed or broken since it was listed
                    raise DataError(f"cannot read {entry.path!r}: {error.strerror or error}") from None
                files.append(ImageFile(split, class_dir.name, entry.path, (stat.st_size, stat.st_mtime_ns)))
    return files


def scan_archive(archive: tarfile.TarFile) -> list[ImageFile]:
    """Image members of an archive: ``[...]/[train|test/]CLASS/FILE``, sorted by member name."""
    files = []
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if not member.isfile() or len(parts) < 2 or not is_image(parts[-1]) or parts[-2].startswith("."):
            continue
        split = parts[-3] if len(parts) >= 3 and parts[-3] in SPLITS else "train"
        files.append(ImageFile(split, parts[-2], member.name))
    return sorted(files, key=lambda f: f.source)


def decode(data: bytes | str, image_size: tuple[int, int] | None) -> np.ndarray | str:
    """(H, W) for grayscale or (H, W, 3) uint8 pixels; or the error message when the image is unreadable."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
            gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            image = image.convert("L" if gray else "RGB")
            if image_size is not None and image.size != (image_size[1], image_size[0]):
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def _decode_pair(item: tuple[bytes | str, tuple[int, int] | None]) -> np.ndarray | str:
    return decode(*item)


def decode_all(
    sources: Sequence[bytes | str],
    image_size: tuple[int, int] | None,
    workers: int,
    tick: Callable[[int], None] | None = None,
) -> list:
    """Decode in a forked process pool when it pays off; results keep the order of ``sources``.

    ``tick(1)`` is called after each image (see :func:`decode_progress`).
    """
    items = [(s, image_size) for s in sources]
    tick = tick or (lambda done: None)
    if workers <= 1 or len(items) < _PARALLEL_FROM:
        results = []
        for item in items:
            results.append(_decode_pair(item))
            tick(1)
        return results
    context = multiprocessing.get_context("fork")  # no re-import of torch in the workers
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = []
        for result in pool.map(_decode_pair, items, chunksize=512):  # in order, as the chunks come back
            results.append(result)
            tick(1)
        return results


@contextmanager
def decode_progress(total: int, where: str, show: bool = True) -> Iterator[Callable[[int], None]]:
    """A ``tick(n)`` that shows decoding progress on stderr: a tqdm bar on a terminal; in a log (stderr not a
    terminal, where a bar writes carriage returns) a line at the start and at each quarter; nothing when
    ``show`` is false or there are too few files to wait for."""
    stream = sys.stderr
    if not show or total < _PROGRESS_FROM:
        yield lambda n: None
    elif stream.isatty():
        with tqdm(total=total, desc=f"decoding {where}", unit="img", file=stream, dynamic_ncols=True) as bar:
            yield bar.update
    else:
        print(f"decoding {total:,} images in {where}", file=stream, flush=True)
        start, done, quarter = time.perf_counter(), 0, 1

        def tick(n: int) -> None:
            nonlocal done, quarter
            done += n
            while quarter <= 4 and 4 * done >= quarter * total:
                seconds = time.perf_counter() - start
                print(
                    f"decoding {where}: {25 * quarter}% ({done:,}/{total:,}, {seconds:.0f} s)", file=stream, flush=True
                )
                quarter += 1

        yield tick


def _stack(arrays: list[np.ndarray], where: str) -> np.ndarray:
    """(N, C, H, W) uint8: L when all images are grayscale, otherwise RGB for all."""
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
        raise DataError(
            f"images in {where} have different sizes ({shown}); resize them with --image-size PIXELS "
            "(image_size= in Python)"
        )
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None]
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))


def _decode_files(
    files: list[ImageFile],
    read: object,
    image_size: tuple[int, int] | None,
    max_bad: int | None,
    where: str,
    progress: bool = True,
) -> dict:
    if image_size is not None:  # every image is decoded to this size and kept: that must fit before decoding starts
        check_memory(
            len(files) * 3 * image_size[0] * image_size[1],
            f"{len(files):,} images of {image_size[0]}x{image_size[1]} pixels",
            "choose a smaller --image-size",
        )
    sources = read(files)  # type: ignore[operator]
    with decode_progress(len(sources), where, progress) as tick:
        results = decode_all(sources, image_size, workers=min(4, os.cpu_count() or 1), tick=tick)
    bad = [(f.source, r) for f, r in zip(files, results) if isinstance(r, str)]
    for source, message in bad[:_MAX_LOGGED]:
        log.warning("skipping unreadable image %s (%s)", source, message)
    if len(bad) > _MAX_LOGGED:
        log.warning("... and %d more unreadable images in %s", len(bad) - _MAX_LOGGED, where)
    check_bad_count(len(bad), len(files), max_bad, where, [s for s, _ in bad])
    good = [(f, r) for f, r in zip(files, results) if not isinstance(r, str)]
    if not good:
        raise DataError(f"no readable images in {where}")
    classes = sorted({f.label for f in files if f.split == "train"})
    index = {c: i for i, c in enumerate(classes)}
    stray = sorted({f.label for f in files} - set(classes))
    if stray:
        raise DataError(f"{where}: test classes {', '.join(stray)} have no training folder; add or remove them")
    _check_split_sizes(good, where)
    pixels = _stack([r for _, r in good], where)
    out: dict = {"classes": classes, "skipped": len(bad), "bad": [s for s, _ in bad[:3]]}
    for split in SPLITS:
        keep = [i for i, (f, _) in enumerate(good) if f.split == split]
        if keep:
            out[f"x_{split}"] = pixels[keep]
            out[f"y_{split}"] = np.array([index[good[i][0].label] for i in keep], dtype=np.int64)
    if "x_train" not in out:
        raise DataError(f"no readable training images in {where}")
    return out


def _check_split_sizes(good: list[tuple[ImageFile, np.ndarray]], where: str) -> None:
    """Refuse test images of another size than the training images, naming both sizes."""
    sizes = {split: {r.shape[:2] for f, r in good if f.split == split} for split in SPLITS}
    if len(sizes["train"]) == 1 and len(sizes["test"]) == 1 and sizes["train"] != sizes["test"]:
        (train_h, train_w), (test_h, test_w) = sizes["train"].pop(), sizes["test"].pop()
        raise DataError(
            f"{where}: training images are {train_h}x{train_w} but test images are {test_h}x{test_w} (HxW); "
            "a model sees one size, so resize them to match or give --image-size PIXELS (image_size= in Python)"
        )


def check_bad_count(bad: int, total: int, max_bad: int | None, where: str, examples: Sequence[str] = ()) -> None:
    """Fail once more than ``max_bad`` (default: max(10, 1%)) of ``total`` files were unreadable."""
    limit = default_max_bad(total) if max_bad is None else max_bad
    if bad > limit:
        shown = "; ".join(examples[:3])
        raise DataError(
            f"{bad} of {total} images in {where} are unreadable (more than the {limit} tolerated; "
            f"--set max_bad_files=N to change that), e.g. {shown}"
        )


def load_image_tree(
    root: Path,
    *,
    image_size: tuple[int, int] | None = None,
    max_bad_files: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[list[str], ArrayDataset, ArrayDataset | None, int]:
    """Classes, train, test (None for a single tree) and the number of skipped files, from a folder or archive.

    ``progress``: show the progress of a decode on stderr (a cached load has none to show).
    """
    root = root.resolve()
    if root.is_file():  # an archive is keyed by its own size and mtime: a cache hit never opens it
        stat = root.stat()
        files: list[ImageFile] | None = None
        payload: object = {"archive": str(root), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    else:
        files = scan_tree(root)
        payload = {"root": str(root), "files": [[f.source, *f.stamp] for f in files]}
    key = cache.cache_key({"tree": payload, "image_size": image_size})
    cached = cache.load_entry(cache.cache_dir(), "image-folder", key) if use_cache else None
    if cached is not None:
        arrays, meta = cached
        if meta["skipped"]:
            log.warning("%d unreadable images in %s were skipped (cached result)", meta["skipped"], root)
        check_bad_count(meta["skipped"], meta["files"], max_bad_files, str(root), meta.get("bad", []))
        out: dict = {**arrays, "classes": meta["classes"], "skipped": meta["skipped"]}
    else:
        out, n_files = _decode_tree(root, files, image_size, max_bad_files, progress)
        if use_cache:
            arrays = {k: v for k, v in out.items() if k.startswith(("x_", "y_"))}
            meta = {name: out[name] for name in ("classes", "skipped", "bad")}
            meta.update(root=str(root), files=n_files)
            cache.store_entry(cache.cache_dir(), "image-folder", key, arrays, meta)
    train = ArrayDataset(torch.from_numpy(out["x_train"]), torch.from_numpy(out["y_train"]))
    test = ArrayDataset(torch.from_numpy(out["x_test"]), torch.from_numpy(out["y_test"])) if "x_test" in out else None
    return list(out["classes"]), train, test, int(out["skipped"])


def _decode_tree(
    root: Path,
    files: list[ImageFile] | None,
    image_size: tuple[int, int] | None,
    max_bad_files: int | None,
    progress: bool = True,
) -> tuple[dict, int]:
    """Decode a scanned folder (``files``) or, when ``files`` is None, the archive at ``root``."""
    archive = None
    try:
        if files is None:
            try:
                archive = tarfile.open(root, "r:*")  # noqa: SIM115 - closed in the finally below
            except (tarfile.TarError, OSError) as err:
                raise DataError(f"{root} is not a readable tar archive of an image tree: {err}") from err
            with reading(root, "tar archive"):
                files = scan_archive(archive)
        if not files:
            raise DataError(f"no images found in {root}; expected [train|test/]CLASS/*.png|jpg|jpeg|bmp|webp")
        read = _reader(archive, root)
        return _decode_files(files, read, image_size, max_bad_files, str(root), progress), len(files)
    finally:
        if archive is not None:
            archive.close()


def _reader(archive: tarfile.TarFile | None, root: Path):
    """Sources to decode: paths for a folder (read by the workers), bytes for an archive (read here, in order)."""
    if archive is None:
        return lambda files: [f.source for f in files]

    def read(files: list[ImageFile]) -> list[bytes]:
        wanted = {f.source for f in files}
        blobs = {}
        with reading(root, "tar archive"):
            for member in archive:  # one sequential pass over the compressed stream
                if member.name in wanted:
                    handle = archive.extractfile(member)
                    blobs[member.name] = handle.read() if handle else b""
        return [blobs[f.source] for f in files]

    return read
