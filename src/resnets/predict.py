"""Classify image files with a trained run or an exported model: the top-k labels and their probabilities.

The model comes from :func:`resnets.runs.exported.open_source`, so a run directory, a safetensors export,
a TorchScript archive and an ONNX file all work, and each says itself how its inputs are prepared. Each
image is read with Pillow, converted to the run's channel count (greyscale "L" or "RGB"), resized to the
run's sample size, and fed through the same loader as training and evaluation (same normalisation with the
run's statistics, same layout for image, vector and sequence models), so a prediction sees exactly what the
model saw in training, and what ``eval`` feeds it. Only regular files are opened (a named pipe would block
until something writes to it), and an image of more than ``MAX_PIXELS`` is refused from its header, before
it is decoded, so that a decompression bomb costs neither time nor memory.

A model trained on vectors (a CSV or npz file) scores vectors instead: every row of the CSV and npz files given
(see ``resnets.data.tabular.read_feature_rows``), each named ``file.csv:LINE`` in the output, normalised with
the run's feature statistics.

A folder stands for the image files under it, recursively, sorted by path (code-point order): files whose extension Pillow
cannot open (notes, CSVs, ``.DS_Store``) are skipped and counted, hidden folders are not entered, and a
folder with no image at all is an error rather than an empty result.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.errors import CheckpointError, DataError
from resnets.io.regular import not_regular
from resnets.io.resources import check_batch
from resnets.runs.exported import open_source
from resnets.runs.memory import check_run_memory
from resnets.runs.open import Run, measurement_loader

_MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
MAX_PIXELS = 64 * 2**20  # 8192 x 8192, 200 MB as RGB; a larger image is refused before it is decoded


@dataclass(frozen=True)
class Prediction:
    """The most probable classes of one image, best first, with probabilities in [0, 1]."""

    path: str
    labels: list[str]
    probabilities: list[float]

    def to_dict(self) -> dict[str, Any]:
        top = [
            {"rank": rank, "label": label, "probability": p}
            for rank, (label, p) in enumerate(zip(self.labels, self.probabilities), start=1)
        ]
        return {"path": self.path, "top": top}


@dataclass(frozen=True)
class ImageList:
    """The image files that the paths given stand for, and how many files found in folders were not images."""

    files: list[Path]
    skipped: int = 0


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes of the formats this Pillow can open (not those it can only write, such as PDF)."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, format in Image.registered_extensions().items() if format in Image.OPEN)


def expand_images(items: Iterable[str | Path]) -> ImageList:
    """Files as given; each folder replaced by the image files under it (see the module docstring).

    A file named outright is kept whatever its extension (reading it says what is wrong with it); only
    files found in folders are filtered by extension.
    """
    extensions = image_extensions()
    files: list[Path] = []
    skipped = 0
    for item in items:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        found: list[Path] = []
        others = 0
        for folder, subfolders, names in os.walk(path):  # symlinked folders are not followed
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in names:
                if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                    found.append(Path(folder) / name)
                else:
                    others += 1
        if not found:
            detail = f" (only {others} other file{'s' if others != 1 else ''})" if others else ""
            raise DataError(
                f"folder {str(path)!r} holds no image files{detail}; expected PNG, JPEG or other images Pillow opens"
            )
        files.extend(sorted(found))
        skipped += others
    if not files:
        raise DataError("no images given; name image files or folders of them")
    return ImageList(files, skipped)


def check_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file before opening it: opening a named pipe blocks until a writer comes."""
    why = not_regular(path)
    if why == "does not exist":
        raise DataError(f"image {str(path)!r} does not exist")
    if why is not None:
        raise DataError(f"image {str(path)!r} {why}; predict reads only regular image files")


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image as uint8 (C, H, W) with ``channels`` channels, resized to ``size`` = (height, width)."""
    from PIL import Image, UnidentifiedImageError

    if channels not in _MODES:
        raise DataError(
            f"the model takes {channels}-channel images; predict reads only 1-channel (greyscale) "
            "or 3-channel (RGB) images"
        )
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused below, not just logged
            with Image.open(path) as image:
                width, height = image.size  # from the header: nothing is decoded yet
                if width * height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{width}x{height} pixels")
                image.load()
                image = image.convert(_MODES[channels])
    except FileNotFoundError:
        raise DataError(f"image {str(path)!r} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(
            f"image {str(path)!r} is too large to decode ({error}; at most {MAX_PIXELS:,} pixels are read); "
            "it may be a decompression bomb, or shrink it first"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(
            f"cannot read image {str(path)!r}: {error}; expected a PNG, JPEG or other image Pillow can open"
        ) from None
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (C, H, W)


def predict_images(
    source: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 5,
    device: str = "cpu",
    checkpoint: str | None = None,
    compile: bool | None = None,
) -> list[Prediction]:
    """The ``top_k`` labels of each image (folders expanded) under the model of ``source``: a run directory,
    or a safetensors, TorchScript or ONNX export of one."""
    files = expand_images(images).files
    return classify(open_source(source, checkpoint=checkpoint, device=device), files, top_k=top_k, compile=compile)


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise DataError(f"--top-k must be at least 1, got {top_k}")


def classify(
    run: Run, images: Sequence[str | Path], *, top_k: int = 5, compile: bool | None = None
) -> list[Prediction]:
    """The ``top_k`` labels of each image file under ``run``'s model, on the fast inference path of a model
    with weights (``Run.inference_model``; ``compile`` None compiles only batches of images big enough to win
    the compilation time back) or the exported graph as saved."""
    check_top_k(top_k)
    recorded = run.record.data
    if recorded is None:
        raise DataError(
            f"{str(run.checkpoint)!r} does not record the training data's sample shape and statistics; predict "
            "needs a run directory (or a safetensors, TorchScript or ONNX file exported from one)"
        )
    names: Sequence[str | Path] = images
    if recorded.kind == "vector":  # a model trained on CSV or npz features scores the rows of such files
        vectors, names = _read_vectors(run, images)
        feed = _unlabelled_loader(run, vectors).epoch_batches(0)
    else:
        feed = _batches(run, images)
    k = min(top_k, run.record.num_classes)
    check_run_memory(run.record, min(run.record.eval_batch_size, len(names)), training=False, what="predicting")
    model, batches = run.inference_model(feed, compile=compile, images=len(names))
    values, indices = [], []
    for x, _ in batches:
        logits = model(x)
        bad = (~torch.isfinite(logits).all(dim=1)).nonzero()
        if len(bad):  # NaN weights: a "nan%" answer with exit status 0 would pass for a prediction
            image = names[len(values) * run.record.eval_batch_size + int(bad[0])]
            raise CheckpointError(
                f"the model's outputs for {str(image)!r} are not finite numbers; the weights of "
                f"{str(run.checkpoint)!r} are damaged (NaN or infinite): use another checkpoint or train again"
            )
        top = logits.softmax(dim=1).topk(k, dim=1)
        values.append(top.values.cpu())
        indices.append(top.indices.cpu())
    return [
        Prediction(str(path), [run.classes[i] for i in rows.tolist()], probabilities.tolist())
        for path, probabilities, rows in zip(names, torch.cat(values), torch.cat(indices))
    ]


def _read_vectors(run: Run, files: Sequence[str | Path]) -> tuple[torch.Tensor, list[str]]:
    """The feature rows of CSV and npz files for a model trained on vectors, each named by its file and place."""
    from resnets.data.tabular import read_feature_rows

    (width,) = (int(s) for s in run.record.data.sample_shape)
    parts = []
    for path in files:
        check_regular_file(path)
        if Path(path).suffix.lower() not in (".csv", ".npz"):
            raise DataError(
                f"{str(path)!r} is not a .csv or .npz file; the model was trained on vectors of {width} features "
                "and scores the rows of CSV and npz files"
            )
        parts.append(read_feature_rows(Path(path), width, run.record.data.label_column))
    return torch.cat([vectors for vectors, _ in parts]), [name for _, names in parts for name in names]


def _batches(run: Run, images: Sequence[str | Path]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images read and normalised as the run's loader feeds its splits, one evaluation batch at a time,
    so that a folder of many images never sits in memory whole."""

    recorded = run.record.data
    channels, height, width = (int(s) for s in recorded.sample_shape)
    size = run.record.eval_batch_size
    check_batch(min(size, len(images)), recorded.sample_shape, "predicting", "predict fewer images at once")
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        inputs = torch.stack([read_image(path, channels, (height, width)) for path in chunk])  # (N, C, H, W) uint8
        yield from _unlabelled_loader(run, inputs).epoch_batches(0)


def _unlabelled_loader(run: Run, inputs: torch.Tensor) -> Any:
    """``inputs`` (images or feature rows, without labels) batched and normalised as the run measures."""
    from resnets.data import ArrayDataset

    recorded = run.record.data
    return measurement_loader(
        ArrayDataset(inputs, torch.zeros(len(inputs), dtype=torch.int64)),
        mean=recorded.mean,
        std=recorded.std,
        layout=recorded.layout,
        precision=run.precision,
        batch_size=run.record.eval_batch_size,
    )
