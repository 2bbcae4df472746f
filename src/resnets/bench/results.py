"""One row of benchmark results: a baseline and one of our variants, measured in the same run.

A case gives one row per variant of ours (inference has two; memory has one for memory, one for time).
``details`` keeps every number the row was computed from (each round, FLOPs, compile time), so that
bench.json can be checked against the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NAN = math.nan


@dataclass
class Row:
    case: str
    variant: str  # what "ours" is in this row: "engine", "folded", "compiled", "checkpointing"
    unit: str  # images/s, MB, s/step
    baseline: float  # median over rounds
    ours: float
    peak_fraction: float = NAN  # ours' share of the machine's peak FLOP/s; nan where it does not apply
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.case} [{self.variant}]"

    @property
    def ratio(self) -> float:
        """ours / baseline: a speed-up for rates, a fraction for memory, a cost factor for step times."""
        if not (math.isfinite(self.baseline) and math.isfinite(self.ours)) or self.baseline == 0:
            return NAN
        return self.ours / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "variant": self.variant,
            "unit": self.unit,
            "baseline": self.baseline,
            "ours": self.ours,
            "ratio": self.ratio,
            "peak_fraction": self.peak_fraction,
            "notes": self.notes,
            "details": self.details,
        }


def skipped(case: str, variant: str, unit: str, why: str, **details: Any) -> Row:
    """A row that was not measured, saying why; its numbers are nan (null in bench.json)."""
    return Row(case, variant, unit, NAN, NAN, notes=f"skipped: {why}", details={"skipped": why, **details})
