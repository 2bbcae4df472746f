"""Alternating rounds and medians: how every case compares two ways of doing the same work.

Contenders run one after another within a round, and the order flips every other round (A B, B A, ...),
so a slow drift of the machine (another process, thermal limits) weighs on both alike. The median over
rounds ignores the round in which something else stole a core. The clock is injectable for tests; on a GPU
the cases pass resnets.compute.device_clock, which waits for the queued kernels before it reads the time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

Clock = Callable[[], float]


def rate(work: Callable[[], int], clock: Clock = time.perf_counter) -> float:
    """Items per second of one call of ``work``, which does the work and returns how many items it did."""
    start = clock()
    items = work()
    elapsed = clock() - start
    return items / elapsed if elapsed > 0 else float("inf")


def alternate(contenders: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each contender once per round, in flipped order every other round; their results per round."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    results: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(float(contenders[name]()))
    return results


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
