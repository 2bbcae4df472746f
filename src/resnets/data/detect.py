"""``load_data``: a dataset name or a path, whose format is detected from its contents, to a DataBundle.

Names: ``fashion-mnist`` (default folder: Debian's dataset-fashion-mnist), ``mnist``, ``cifar10``, ``cifar100``
(these three read from ``data_dir``). A path is sniffed: IDX magic bytes, CIFAR meta files, a tree of class
folders, a CSV, an .npz (zip magic), or a tar archive holding CIFAR or an image tree. Extensions are not
trusted, because downloads are often renamed. An IDX folder given as a path is recognised by its pixels
(``idx.recognise``: MNIST's thin strokes leave ~81% of pixels black, Fashion-MNIST's garments ~50%) and gets
that release's class names and flips; only pixels that match neither fall back on the path (Fashion-MNIST when
it contains "fashion", else digits). ``DataBundle.identity`` says what the data was taken to be, and why.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from pathlib import Path

from resnets.data import cifar, idx, image_folder, tabular
from resnets.data.dataset import HOLDOUT_FRACTION, ArrayDataset, DataBundle, make_bundle, reading
from resnets.errors import DataError

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100")
FORMATS = ("idx", "cifar10", "cifar100", "image-folder", "csv", "npz")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_CIFAR_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_CIFAR_EVIDENCE = {"cifar10": "batches.meta, data_batch_1..5", "cifar100": "meta, train, test"}  # cifar.cifar_variant
_SUPPORTED = (
    "a folder of MNIST-style IDX files (train-images-idx3-ubyte[.gz], ...), a CIFAR-10/100 python-version folder "
    "or .tar.gz, an image tree ([train|test/]CLASS/*.png|jpg), a tar of such a tree, a .csv with a header row, "
    "or an .npz with x/y arrays"
)


def _head(path: Path, size: int = 512) -> bytes:
    """The first bytes of a file, decompressed when it is gzipped."""
    with path.open("rb") as handle:
        raw = handle.read(size)
    if raw[:2] == idx.GZIP_MAGIC:
        with reading(path, "gzip file"), gzip.open(path, "rb") as handle:
            return handle.read(size)
    return raw


def _looks_like_csv(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return "," in first


def _sniff_tar(path: Path, limit: int = 200) -> str | None:
    """The format inside a tar archive, from its first members only (reading all of a big .tar.gz is slow)."""
    with reading(path, "tar archive"), tarfile.open(path, "r:*") as archive:
        for count, member in enumerate(archive):
            base = Path(member.name).name
            if member.isfile() and (base == "batches.meta" or base.startswith("data_batch_")):
                return "cifar10"
            if member.isfile() and base in ("meta", "train", "test"):
                return "cifar100"
            if member.isfile() and image_folder.is_image(base):
                return "image-folder"
            if count >= limit:
                break
    return None


def detect_format(path: Path) -> tuple[str, Path]:
    """The format of ``path`` and the path to load it from (an IDX file's folder, for one)."""
    if path.is_dir():
        if idx.find_idx_files(path):
            return "idx", path
        variant = cifar.cifar_variant(path)
        if variant:
            return variant, path
        if image_folder.looks_like_image_tree(path):
            return "image-folder", path
    elif path.is_file():
        head = _head(path)
        if idx.is_idx_header(head[:4]):
            return "idx", path.parent
        if head[:4] == b"PK\x03\x04" and zipfile.is_zipfile(path):
            return "npz", path
        if head[:1] == b"\x80" and cifar.cifar_variant(path.parent):  # one pickled batch: load its folder
            return cifar.cifar_variant(path.parent) or "", path.parent
        with reading(path, "tar archive"):  # a damaged gzip stream raises more than TarError here
            is_tar = tarfile.is_tarfile(path)
        if is_tar:
            fmt = _sniff_tar(path)
            if fmt:
                return fmt, path
        elif _looks_like_csv(path):
            return "csv", path
    raise DataError(f"cannot tell the format of {path}; supported: {_SUPPORTED}")


def _resolve_name(name: str, data_dir: Path | None) -> tuple[str, Path]:
    if name == "fashion-mnist":
        folder = data_dir or FASHION_MNIST_DIR
        if not folder.is_dir():
            raise DataError(
                f"Fashion-MNIST folder {folder} does not exist; install it with `apt-get install "
                "dataset-fashion-mnist` or give the folder with the four IDX files: --data-dir FOLDER (data_dir= in Python)"
            )
        return "idx", folder
    if data_dir is None:
        raise DataError(
            f"dataset {name!r} is read from a folder you give: --data-dir FOLDER (data_dir= in Python); nothing is "
            "downloaded"
        )
    if not data_dir.exists():
        raise DataError(f"--data-dir {data_dir} for dataset {name!r} does not exist")
    if name == "mnist":
        return "idx", data_dir
    return name, cifar.find_cifar(data_dir, name)


def _idx_identity(name: str, folder: Path, train: ArrayDataset) -> tuple[list[str], bool, str]:
    """Class names, whether flips keep labels (Fashion-MNIST's clothes are mirror-invariant, digits are not),
    and a note saying what the data was taken to be and why: a dataset name, else the pixels, else the path."""
    look = idx.recognise(train.inputs)
    num_classes = int(train.targets.max()) + 1 if len(train) else 0
    if name in ("mnist", "fashion-mnist"):
        release = "Fashion-MNIST" if name == "fashion-mnist" else "MNIST"
        note = f"{release} (by name)"
        if look.release and look.release != release:
            note += f"; but its pixels look like {look.release} ({look.describe()})"
    elif num_classes > len(idx.MNIST_CLASSES):  # EMNIST, KMNIST-49, ...: whatever the pixels, not these two
        note = f"IDX images of {num_classes} classes, named by number (MNIST and Fashion-MNIST have 10)"
        return [str(i) for i in range(num_classes)], False, note
    elif look.release:
        release, note = look.release, f"{look.release} (recognised by content: {look.describe()})"
    else:
        fashion = "fashion" in str(folder).lower()
        release = "Fashion-MNIST" if fashion else "MNIST"
        seen = f"{look.describe()}; " if look.mean == look.mean else ""  # NaN: not 28x28 grey images
        why = 'its path says "fashion"' if fashion else 'digits assumed: its path does not say "fashion"'
        note = f"{release} (the pixels match neither MNIST nor Fashion-MNIST: {seen}{why})"
    if release == "Fashion-MNIST":
        return list(idx.FASHION_MNIST_CLASSES), True, note
    return list(idx.MNIST_CLASSES), False, note


def load_data(
    spec: str | Path,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.0,
    val_size: int | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    max_bad_files: int | None = None,
    test_fraction: float = HOLDOUT_FRACTION,
    progress: bool = True,
    label_column: str | None = None,
) -> DataBundle:
    """Load a data set fully into memory, hold out a seeded validation split, and compute train statistics.

    ``spec`` is one of :data:`DATASET_NAMES` or a path. ``val_size=5000`` on CIFAR-10 gives the 45k/5k split of
    He et al. (2015). ``image_size`` resizes image-folder images; ``max_bad_files`` bounds the unreadable images
    tolerated there (default max(10, 1% of the files)). Data without a test split (a CSV, an npz of x/y only, a
    tree without test/) has a seeded ``test_fraction`` held out as its test split. ``progress=False`` hides the
    progress of a long first decode of an image folder (shown on stderr otherwise). ``label_column`` names a CSV
    file's label column (default: ``label``, ``target`` or ``class``, else the last; see ``resnets.data.tabular``).
    """
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    if str(spec) in DATASET_NAMES:
        name = str(spec)
        fmt, path = _resolve_name(name, folder)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(
                f"{str(spec)!r} is neither a dataset name ({', '.join(DATASET_NAMES)}) nor an existing path"
            )
        name = str(spec)
        fmt, path = detect_format(path)
    if label_column is not None and fmt != "csv":
        raise DataError(
            f"--label-column {label_column!r} names a column of a CSV file, and {str(spec)!r} is {fmt} data"
        )
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    split = {"val_fraction": val_fraction, "val_size": val_size, "seed": seed, "test_fraction": test_fraction}
    if fmt == "idx":
        train, test = idx.load_idx_folder(path)
        classes, flip, identity = _idx_identity(name, path, train)
        return make_bundle(name, "image", classes, train, test, flip=flip, identity=identity, **split)
    if fmt in ("cifar10", "cifar100"):
        classes, train, test = cifar.load_cifar(path, fmt)
        identity = f"{_CIFAR_NAMES[fmt]} (recognised by its files: {_CIFAR_EVIDENCE[fmt]})"
        return make_bundle(name, "image", classes, train, test, flip=True, identity=identity, **split)
    if fmt == "image-folder":
        classes, train, test, skipped = image_folder.load_image_tree(
            path, image_size=size, max_bad_files=max_bad_files, progress=progress
        )
        identity = f"image tree of {len(classes)} classes, named by its folders"
        return make_bundle(
            name, "image", classes, train, test, flip=True, skipped_files=skipped, identity=identity, **split
        )
    if fmt == "csv":
        classes, train, label = tabular.load_csv(path, label_column)
        identity = f"CSV table of {len(classes)} classes, labels from its column {label!r}"
        return make_bundle(name, "vector", classes, train, None, flip=False, identity=identity, **split)
    kind, classes, train, test = tabular.load_npz(path)
    identity = f"npz arrays of {kind} data, {len(classes)} classes"
    return make_bundle(name, kind, classes, train, test, flip=kind == "image", identity=identity, **split)
