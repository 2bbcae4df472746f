"""Vector data for MLPs: a CSV with a header row, or a numpy ``.npz``.

CSV: the label column is the one ``--label-column NAME`` (``label_column``) names, or by default the one named
``label``, ``target`` or ``class`` (any case), else the last column; every other column is a float feature. Labels that are all non-negative integers are used as class indices
(below ``MAX_CLASSES``, 100,000); otherwise the distinct label strings, sorted, become the classes. Features
must be finite real numbers: NaN, inf and complex values are refused at load time, naming the first one,
rather than surfacing later as a diverging loss.

npz (read with ``allow_pickle=False``, so it cannot run code): ``x``/``y`` or ``features``/``labels`` for one
training split, or ``x_train``, ``y_train``, ``x_test``, ``y_test``; an optional ``classes`` string array.
Two-dimensional ``x`` is vector data; uint8 ``x`` of dims (N, H, W) or (N, C, H, W) is image data.

Scoring (``resnets predict`` with a model trained on vectors): :func:`read_feature_rows` reads the rows of a CSV
(the training file's feature columns, in its order, with or without the label column) or the vectors of an
npz (``x``, ``features``, ``x_test`` or ``x_train``), each named by where it came from (``file.csv:2``).
"""

from __future__ import annotations

import csv
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from resnets.data.dataset import ArrayDataset
from resnets.errors import DataError, closest, first_line
from resnets.io.resources import check_memory

LABEL_COLUMNS = ("label", "target", "class")
MAX_CLASSES = 100_000  # integer labels must be class indices below this; more distinct string labels are refused
_NPZ_PAIRS = (("x_train", "y_train"), ("x", "y"), ("features", "labels"))


def _position(where: str, index: int, first_line: int | None) -> str:
    """``file:line`` for a CSV row, ``file, sample i`` for an array element."""
    return f"{where}:{first_line + index}" if first_line is not None else f"{where}, sample {index}"


def encode_labels(values: np.ndarray, where: str, first_line: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names for raw labels (integers as they are, strings sorted).

    Integer labels are class indices, so they must lie in [0, MAX_CLASSES): one stray large value (an ID
    column taken for the label) would otherwise ask for that many classes and their names. Labels that are all
    numbers are class indices too: one that is not a whole number >= 0 (``-1``, ``1.5``, ``nan``) is refused
    rather than silently turning every label into a text class ("0", "1", "1.5").
    """
    if values.dtype.kind == "b" or values.dtype.kind not in "iufUS":
        raise DataError(f"{where}: labels must be class indices or names, got {values.dtype} values")
    if values.dtype.kind not in "iu":
        text = np.char.strip(values.astype(str))  # floats too: 3.0 is class 3, 1.5 is refused
        numbers = _class_indices(text, where, first_line)
        if numbers is None:
            return _encode_names(text, where)
        values = np.array(numbers, dtype=np.int64)
    if values.size and values.min() < 0:
        first = int(np.argmax(values < 0))
        raise DataError(f"{_position(where, first, first_line)}: integer labels must be >= 0, got {values[first]}")
    if values.size and values.max() >= MAX_CLASSES:
        first = int(np.argmax(values >= MAX_CLASSES))
        raise _too_large(where, first, int(values[first]), first_line)
    top = int(values.max()) + 1 if values.size else 0
    return values.astype(np.int64), [str(i) for i in range(top)]


def _class_indices(text: np.ndarray, where: str, first_line: int | None) -> list[int] | None:
    """Labels that all read as numbers as class indices; None when one is a name (then all are names).

    Each must be a whole number in [0, MAX_CLASSES); Python ints read the digits, so a 30-digit label is refused
    rather than overflowing.
    """
    numbers: list[float | int] = []
    for label in text.tolist():
        try:
            numbers.append(int(label) if label.isascii() and label.isdigit() else float(label))
        except ValueError:
            return None
    for index, number in enumerate(numbers):
        if not (math.isfinite(number) and number >= 0 and float(number).is_integer()):
            raise DataError(
                f"{_position(where, index, first_line)}: label {str(text[index])!r} is a number but not a class index "
                "(a whole number >= 0); number the classes 0..N-1, or name them with words"
            )
        if number >= MAX_CLASSES:
            raise _too_large(where, index, int(number), first_line)
    return [int(number) for number in numbers]


def _too_large(where: str, index: int, value: int, first_line: int | None) -> DataError:
    return DataError(
        f"{_position(where, index, first_line)}: label {value} is not a class index 0..N-1 with N at most "
        f"{MAX_CLASSES:,}; check that the label column holds classes, not IDs or measurements"
    )


def _encode_names(text: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Sorted distinct strings as the classes; too many of them means the column is not a class label."""
    classes = sorted(set(text.tolist()))
    if len(classes) > MAX_CLASSES:
        raise DataError(
            f"{where}: the labels hold {len(classes):,} distinct values, more than the {MAX_CLASSES:,} classes "
            "supported; check that the label column holds classes, not IDs or measurements"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in text], dtype=np.int64), classes


def _vector(x: np.ndarray, where: str) -> torch.Tensor:
    """float32 features, refusing complex values, non-numbers and values that are not finite in float32."""
    if x.dtype.kind == "c":
        imaginary = np.argwhere(x.imag != 0)
        first = (
            f", e.g. {x[tuple(imaginary[0])]} at index {tuple(int(i) for i in imaginary[0])}" if len(imaginary) else ""
        )
        raise DataError(f"{where}: features are complex ({x.dtype}{first}); expected real numbers")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        values = np.ascontiguousarray(x, dtype=np.float32)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        at = tuple(int(i) for i in bad[0])
        raise DataError(
            f"{where}: features must be finite numbers, but index {at} holds {x[at]} ({len(bad)} non-finite values in all); "
            "remove or impute them before training"
        )
    return torch.from_numpy(values)


def label_index(header: list[str], label_column: str | None, where: str) -> int:
    """The label column's position: the one named ``label_column`` (exactly, else ignoring case), or by default
    the first named ``label``, ``target`` or ``class`` (any case), else the last column."""
    lowered = [h.lower() for h in header]
    if label_column is None:
        return next((lowered.index(n) for n in LABEL_COLUMNS if n in lowered), len(header) - 1)
    if label_column in header:
        return header.index(label_column)
    if label_column.lower() in lowered:
        return lowered.index(label_column.lower())
    close = closest(label_column, header)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"its columns: {', '.join(header)}"
    raise DataError(f"--label-column {label_column!r} is not a column of {where}; {hint}")


def load_csv(path: Path, label_column: str | None = None) -> tuple[list[str], ArrayDataset, str]:
    """Classes, the (single) training split of a CSV file, and the name of its label column."""
    try:  # parsed rows take tens of bytes per character of the file (a str and a list slot per field)
        check_memory(path.stat().st_size * 32, f"reading {path} as CSV", "use a smaller file, or an .npz archive")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path} as CSV text: {first_line(err)}") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    label_col = label_index(header, label_column, str(path))
    feature_cols = [i for i in range(len(header)) if i != label_col]
    if not feature_cols:
        raise DataError(f"{path} has only a label column; at least one feature column is needed")
    features = np.empty((len(rows) - 1, len(feature_cols)), dtype=np.float64)  # float32 after the checks
    labels = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line} has {len(row)} fields but the header has {len(header)}")
        for j, col in enumerate(feature_cols):
            try:
                features[line - 2, j] = float(row[col])
            except ValueError:
                raise DataError(
                    f"{path}:{line}: column {header[col]!r} holds {row[col]!r}, not a number; only the label "
                    f"column ({header[label_col]!r}) may hold text"
                ) from None
        labels.append(row[label_col].strip())
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
        features = features.astype(np.float32)
    bad = np.argwhere(~np.isfinite(features))
    if len(bad):  # nan and inf parse as floats
        sample, j = (int(i) for i in bad[0])
        col = feature_cols[j]
        raise DataError(
            f"{path}:{sample + 2}: column {header[col]!r} holds {rows[sample + 1][col]!r}, not a finite number "
            f"({len(bad)} non-finite values in all); remove or impute them before training"
        )
    targets, classes = encode_labels(np.array(labels), str(path), first_line=2)
    return classes, ArrayDataset(torch.from_numpy(features), torch.from_numpy(targets)), header[label_col]


def _npz_inputs(x: np.ndarray, where: str) -> tuple[str, torch.Tensor]:
    if x.ndim == 2:
        return "vector", _vector(x, where)
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        images = x[:, None] if x.ndim == 3 else x
        return "image", torch.from_numpy(np.ascontiguousarray(images))
    raise DataError(
        f"{where}: expected features (N, D), or uint8 images (N, H, W) / (N, C, H, W); got {x.dtype} {x.shape}"
    )


def _check_npz_memory(archive: np.lib.npyio.NpzFile, path: Path) -> None:
    """Refuse an archive whose arrays would not fit in memory, from their headers, before any is decompressed."""
    total = 0
    for name in archive.zip.namelist():
        with archive.zip.open(name) as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(member)
            total += math.prod(shape) * dtype.itemsize
    check_memory(total, f"the arrays of {path}", "use a smaller data set")


def _named_classes(
    given: np.ndarray, targets: np.ndarray, classes: list[str], where: str
) -> tuple[np.ndarray, list[str]]:
    """The archive's own class names: distinct strings, at least one per class index (or naming every label)."""
    if given.ndim != 1 or given.dtype.kind not in "US" or len(given) > MAX_CLASSES:
        raise DataError(
            f"{where}: expected a list of at most {MAX_CLASSES:,} class names, got {given.dtype} {given.shape}"
        )
    names = [str(c) for c in given.tolist()]
    if len(set(names)) != len(names):
        raise DataError(f"{where}: class names must be distinct, got {len(names) - len(set(names))} repeated")
    if classes and not all(c.isdigit() for c in classes):  # the labels are names: index them by this list
        index = {name: i for i, name in enumerate(names)}
        missing = [c for c in classes if c not in index]
        if missing:
            raise DataError(f"{where}: label {missing[0]!r} is not among the class names")
        return np.array([index[classes[t]] for t in targets.tolist()], dtype=np.int64), names
    if len(names) < len(classes):
        raise DataError(f"{where}: {len(names)} class names, but the labels go up to {len(classes) - 1}")
    return targets, names


def load_npz(path: Path) -> tuple[str, list[str], ArrayDataset, ArrayDataset | None]:
    """Kind, classes, train and test (or None) of an ``.npz`` archive."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            _check_npz_memory(archive, path)
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
        raise DataError(f"cannot read {path} as .npz without pickles: {first_line(err)}") from None
    pair = next((p for p in _NPZ_PAIRS if p[0] in arrays and p[1] in arrays), None)
    if pair is None:
        raise DataError(
            f"{path} holds arrays {sorted(arrays)}; expected x/y, features/labels or x_train/y_train[/x_test/y_test]"
        )
    splits = [(pair[0], pair[1])] + ([("x_test", "y_test")] if pair[0] == "x_train" else [])
    present = [s for s in splits if s[0] in arrays and s[1] in arrays]
    raw_labels = np.concatenate([arrays[y].reshape(-1) for _, y in present])
    targets, classes = encode_labels(raw_labels, str(path))  # one mapping for train and test
    if "classes" in arrays:
        targets, classes = _named_classes(arrays["classes"], targets, classes, f"{path}:classes")
    datasets, kinds, start = [], set(), 0
    for x_name, y_name in present:
        kind, inputs = _npz_inputs(arrays[x_name], f"{path}:{x_name}")
        n = arrays[y_name].size
        if inputs.shape[0] != n:
            raise DataError(f"{path}: {x_name} has {inputs.shape[0]} rows but {y_name} has {n} labels")
        datasets.append(ArrayDataset(inputs, torch.from_numpy(targets[start : start + n])))
        kinds.add(kind)
        start += n
    if len(kinds) > 1 or (len(datasets) == 2 and datasets[0].inputs.shape[1:] != datasets[1].inputs.shape[1:]):
        raise DataError(f"{path}: x_train and x_test have different shapes or kinds")
    return kinds.pop(), classes, datasets[0], datasets[1] if len(datasets) > 1 else None


#: npz arrays that ``read_feature_rows`` scores, in the order looked for.
_SCORED_ARRAYS = ("x", "features", "x_test", "x_train")


def read_feature_rows(path: Path, width: int, label_column: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """The vectors of a CSV or .npz file to score with a model trained on ``width`` features, and each one's
    place (``file.csv:LINE``, ``file.npz:x[i]``). A CSV row holds the features in the training file's order,
    alone or with its label column (``label_column``, or found as in training), which is left out."""
    if path.suffix.lower() == ".npz":
        return _npz_rows(path, width)
    try:
        check_memory(path.stat().st_size * 32, f"reading {path} as CSV", "score a smaller file")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path} as CSV text: {first_line(err)}") from None
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one row to score, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    if len(header) not in (width, width + 1):
        raise DataError(
            f"{path} has {len(header)} columns; the model takes {width} features (the training file's feature "
            f"columns, in its order, with or without its label column)"
        )
    label = label_index(header, label_column, str(path)) if len(header) > width else None
    keep = [i for i in range(len(header)) if i != label]
    features = np.empty((len(rows) - 1, width), dtype=np.float64)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line} has {len(row)} fields but the header has {len(header)}")
        try:
            features[line - 2] = [float(row[i]) for i in keep]
        except ValueError:
            raise DataError(f"{path}:{line}: a feature is not a number ({', '.join(row[i] for i in keep)})") from None
    names = [f"{path}:{line}" for line in range(2, len(rows) + 1)]
    return _vector(features, str(path)), names


def _npz_rows(path: Path, width: int) -> tuple[torch.Tensor, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            _check_npz_memory(archive, path)
            key = next((k for k in _SCORED_ARRAYS if k in archive.files), None)
            if key is None:
                raise DataError(f"{path} holds arrays {sorted(archive.files)}; expected one of {list(_SCORED_ARRAYS)}")
            x = archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
        raise DataError(f"cannot read {path} as .npz without pickles: {first_line(err)}") from None
    if x.ndim != 2 or x.shape[1] != width:
        raise DataError(f"{path}:{key} has shape {x.shape}; the model takes vectors of {width} features: (N, {width})")
    return _vector(x, f"{path}:{key}"), [f"{path}:{key}[{i}]" for i in range(len(x))]
