"""Classify image files with a trained run: the top-k labels and their probabilities.

Each image is read with Pillow, converted to the run's channel count (greyscale "L" or "RGB"), resized to
the run's sample size, and fed through the same loader as training and evaluation (same normalisation
with the run's statistics, same layout for image, vector and sequence models), so a prediction sees
exactly what the model saw in training. Only regular files are opened (a named pipe would block until
something writes to it), and an image of more than ``MAX_PIXELS`` is refused from its header, before it is
decoded, so that a decompression bomb costs neither time nor memory.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.errors import DataError
from resnets.inference import with_fast_model
from resnets.runs.open import measurement_loader, open_run

_MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
MAX_PIXELS = 64 * 2**20  # 8192 x 8192, 200 MB as RGB; a larger image is refused before it is decoded


@dataclass(frozen=True)
class Prediction:
    """The most probable classes of one image, best first, with probabilities in [0, 1]."""

    path: str
    labels: list[str]
    probabilities: list[float]

    def to_dict(self) -> dict[str, Any]:
        top = [{"label": label, "probability": p} for label, p in zip(self.labels, self.probabilities)]
        return {"path": self.path, "top": top}


def check_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file before opening it: opening a named pipe blocks until a writer comes."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"image {str(path)!r} does not exist") from None
    except OSError as error:
        raise DataError(f"cannot read image {str(path)!r}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise DataError(f"image {str(path)!r} is {kind}; predict reads only regular image files")


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
    """The ``top_k`` labels of each image under the model of a run directory (or a safetensors export).

    The model runs on the fast inference path (:mod:`resnets.inference`); ``compile`` None compiles only
    batches of images big enough to win the compilation time back.
    """
    from resnets.data import ArrayDataset

    if top_k < 1:
        raise DataError(f"--top-k must be at least 1, got {top_k}")
    run = open_run(source, checkpoint=checkpoint, device=device)
    recorded = run.record.data
    if recorded is None:
        raise DataError(
            f"{str(source)!r} does not record the training data's sample shape and statistics; predict needs a run "
            "directory (or a safetensors file exported from one)"
        )
    if len(recorded.sample_shape) != 3:
        raise DataError(
            f"the model was trained on vectors of shape {tuple(recorded.sample_shape)}, not images; "
            "predict reads images"
        )
    channels, height, width = (int(s) for s in recorded.sample_shape)
    inputs = torch.stack([read_image(path, channels, (height, width)) for path in images])  # (N, C, H, W) uint8
    dataset = ArrayDataset(inputs, torch.zeros(len(images), dtype=torch.int64))
    loader = measurement_loader(
        dataset,
        mean=recorded.mean,
        std=recorded.std,
        layout=recorded.layout,
        precision=run.precision,
        batch_size=run.record.eval_batch_size,
    )
    k = min(top_k, run.record.num_classes)
    model, batches = with_fast_model(
        run.model, loader.epoch_batches(0), precision=run.precision, compile=compile, images=len(images)
    )
    probabilities = [model(x).softmax(dim=1).cpu() for x, _ in batches]
    top = torch.cat(probabilities).topk(k, dim=1)
    return [
        Prediction(str(path), [run.classes[i] for i in indices.tolist()], values.tolist())
        for path, values, indices in zip(images, top.values, top.indices)
    ]
