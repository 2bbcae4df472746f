"""What a study shows while it measures: a bar on a terminal, plain lines in a log, as ``resnets train`` does.

A tqdm bar writes carriage returns, which a log file keeps as one long line of overwritten bars; so where stderr
is not a terminal (a log, a pipe, a batch job) a line is printed when a loop starts and at each tenth of it,
with the time so far and an ETA (:func:`resnets.train.progress.format_duration`, the format training uses).
Quiet mode shows nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

from resnets.train.progress import format_duration

LINES = 10  # plain lines per loop (one at each tenth), besides the first


def progress(items: Iterable[Any], *, desc: str, quiet: bool = False) -> Iterator[Any]:
    """Yield ``items`` while showing progress on stderr (see the module docstring)."""
    items = list(items)
    if quiet or not items:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
        return
    total, start, shown = len(items), time.perf_counter(), 0
    print(f"{desc}: 0/{total}", file=sys.stderr, flush=True)
    for done, item in enumerate(items, 1):
        yield item
        if done * LINES >= (shown + 1) * total:  # crossed the next tenth
            shown = done * LINES // total
            elapsed = time.perf_counter() - start
            eta = format_duration(elapsed / done * (total - done))
            print(f"{desc}: {done}/{total}, {format_duration(elapsed)}, eta {eta}", file=sys.stderr, flush=True)
