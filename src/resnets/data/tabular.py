"""Vector data for MLPs: a CSV with a header row, or a numpy ``.npz``.

CSV: the label column is the one named ``label``, ``target`` or ``class`` (any case), else the last column;
every other column is a float feature. Labels that are all non-negative integers are used as class indices
(below ``MAX_CLASSES``, 100,000); otherwise the distinct label strings, sorted, become the classes. Features
must be finite real numbers: NaN, inf and complex values are refused at load time, naming the first one,
rather than surfacing later as a diverging loss.

npz (read with ``allow_pickle=False``, so it cannot run code): ``x``/``y`` or ``features``/``labels`` for one
training split, or ``x_train``, ``y_train``, ``x_test``, ``y_test``; an optional ``classes`` string array.
Two-dimensional ``x`` is vector data; uint8 ``x`` of dims (N, H, W) or (N, C, H, W) is image data.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch

from resnets.data.dataset import ArrayDataset
from resnets.errors import DataError

LABEL_COLUMNS = ("label", "target", "class")
MAX_CLASSES = 100_000  # integer labels must be class indices below this; more distinct string labels are refused
_NPZ_PAIRS = (("x_train", "y_train"), ("x", "y"), ("features", "labels"))


def _position(where: str, index: int, first_line: int | None) -> str:
    """``file:line`` for a CSV row, ``file, sample i`` for an array element."""
    return f"{where}:{first_line + index}" if first_line is not None else f"{where}, sample {index}"


def encode_labels(values: np.ndarray, where: str, first_line: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names for raw labels (integers as they are, strings sorted).

    Integer labels are class indices, so they must lie in [0, MAX_CLASSES): one stray large value (an ID
    column taken for the label) would otherwise ask for that many classes and their names.
    """
    if values.dtype.kind not in "iu":
        text = values.astype(str)
        if not all(v.isascii() and v.isdigit() for v in text):
            return _encode_names(text, where)
        numbers = [int(v) for v in text]  # Python ints: a 30-digit label must not overflow before it is refused
        large = next((i for i, n in enumerate(numbers) if n >= MAX_CLASSES), None)
        if large is not None:
            raise _too_large(where, large, numbers[large], first_line)
        values = np.array(numbers, dtype=np.int64)
    if values.size and values.min() < 0:
        first = int(np.argmax(values < 0))
        raise DataError(f"{_position(where, first, first_line)}: integer labels must be >= 0, got {values[first]}")
    if values.size and values.max() >= MAX_CLASSES:
        first = int(np.argmax(values >= MAX_CLASSES))
        raise _too_large(where, first, int(values[first]), first_line)
    top = int(values.max()) + 1 if values.size else 0
    return values.astype(np.int64), [str(i) for i in range(top)]


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


def load_csv(path: Path) -> tuple[list[str], ArrayDataset]:
    """Classes and the (single) training split of a CSV file."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path} as CSV text: {err}") from err
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    lowered = [h.lower() for h in header]
    label_col = next((lowered.index(n) for n in LABEL_COLUMNS if n in lowered), len(header) - 1)
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
    return classes, ArrayDataset(torch.from_numpy(features), torch.from_numpy(targets))


def _npz_inputs(x: np.ndarray, where: str) -> tuple[str, torch.Tensor]:
    if x.ndim == 2:
        return "vector", _vector(x, where)
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        images = x[:, None] if x.ndim == 3 else x
        return "image", torch.from_numpy(np.ascontiguousarray(images))
    raise DataError(
        f"{where}: expected features (N, D), or uint8 images (N, H, W) / (N, C, H, W); got {x.dtype} {x.shape}"
    )


def load_npz(path: Path) -> tuple[str, list[str], ArrayDataset, ArrayDataset | None]:
    """Kind, classes, train and test (or None) of an ``.npz`` archive."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path} as .npz without pickles: {err}") from err
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
        classes = [str(c) for c in arrays["classes"].tolist()]
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
