"""Counted nouns for messages and banners: ``1 epoch``, ``2.5 epochs``, ``1,000 steps``."""

from __future__ import annotations


def counted(count: float, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is one; whole numbers with thousands separators, others
    to 4 significant digits."""
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    number = f"{count:,}" if isinstance(count, int) else f"{count:.4g}"
    return f"{number} {noun if count == 1 else plural or noun + 's'}"
