"""Data sets held fully in memory as tensors, and the batches a training loop draws from them.

``load_data(spec)`` reads a named data set or a path of any supported format into a :class:`DataBundle`;
:class:`BatchLoader` turns one of its splits into normalised, optionally augmented batches.
"""

from resnets.data.augment import BatchAugment
from resnets.data.dataset import ArrayDataset, DataBundle
from resnets.data.detect import DATASET_NAMES, FORMATS, detect_format, load_data
from resnets.data.loader import BatchLoader

__all__ = [
    "DATASET_NAMES",
    "FORMATS",
    "ArrayDataset",
    "BatchAugment",
    "BatchLoader",
    "DataBundle",
    "detect_format",
    "load_data",
]
