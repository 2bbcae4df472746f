"""Refuse a request for more memory than the machine has, before allocating it.

A run record, an export's metadata or a flag can ask for batches of huge images (``sample_shape`` [3, 100000,
100000], ``--crop-padding 1000000``): allocated, that is a MemoryError or the kernel's out-of-memory killer. The
sizes are bounded where they are read (:mod:`resnets.io.schema`); what a batch of them needs is checked here
against the memory available now (the smaller of the machine's free memory and the container's limit), so such a
request is one line naming what asked for how much.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from resnets.errors import ResnetsError

#: Bytes held per value of an input batch while it is prepared: the uint8 pixels, their float32 copy and the
#: normalised float32 result.
BATCH_BYTES_PER_VALUE = 1 + 4 + 4


class ResourceError(ResnetsError):
    """A request for more memory (or compute) than the machine has."""


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or None where the system does not say."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    found += [limit for limit in (_cgroup_room(),) if limit is not None]
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def _cgroup_room() -> int | None:
    """The container's memory limit less its usage (cgroup v2, else v1), or None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse when ``needed`` bytes (for ``what``) exceed the memory available; ``fix`` says how to need less."""
    room = available_memory()
    if room is not None and needed > room:
        raise ResourceError(f"{what} needs {_size(needed)} of memory but {_size(room)} is available; {fix}")


def check_batch(batch: int, sample_shape: Sequence[int], what: str, fix: str) -> None:
    """Refuse a batch of ``batch`` samples of ``sample_shape`` (padding included) that cannot be held."""
    needed = batch * math.prod(int(s) for s in sample_shape) * BATCH_BYTES_PER_VALUE
    check_memory(needed, f"{what} (a batch of {batch} x {'x'.join(str(int(s)) for s in sample_shape)})", fix)


def _size(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:,} bytes"
