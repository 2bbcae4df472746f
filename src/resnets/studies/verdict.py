"""Verdicts with their uncertainty: supported, not supported, or undecided, and the interval that decided.

A claim is judged by checks. A check compares one measured quantity, given per seed (or per draw), with a
:class:`Threshold` that stands next to the paper's own number and its place in the paper. The interval of a
check is the range of its per-seed values: every value on the claim's side of the threshold is *supported*,
none is *not supported*, and an interval that straddles the threshold is *undecided* (so is a check with no
finite value). A verdict is not supported as soon as one check is not, supported when every check is, and
undecided otherwise.

Trained nets change while they train, so a trained-net instrument also follows its headline quantity over the
run's kept snapshots (:func:`settling`): settled when the last stretch of training moved it by at most
:data:`SETTLED_WITHIN` of its value; the verdict says when an unsettled quantity was still moving towards the
threshold, i.e. when a longer run could change it.

A claim about trained nets is judged on nets trained to convergence: where a net's test error is known to be
more than its reference's tolerance above what its net and recipe reach at convergence (``convergence`` in
each trained run's description, :mod:`resnets.studies.plans`), the verdict is undecided, whatever the checks
say, and says how far the net is (:func:`unconverged`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SUPPORTED, NOT_SUPPORTED, UNDECIDED = "supported", "not supported", "undecided"
STATUSES = (SUPPORTED, NOT_SUPPORTED, UNDECIDED)
SETTLED_WITHIN = 0.05  # |last change| / |last value| up to which a quantity counts as settled


@dataclass(frozen=True)
class Threshold:
    """The line a measured quantity must stay on one side of for the claim to hold, with its source.

    ``paper`` is the paper's own number or statement, ``source`` where it stands (section, figure, table), and
    ``why`` how our line follows from it (a CPU net is not the paper's net).
    """

    value: float
    above: bool  # the claim holds for values above ``value`` (else below)
    unit: str
    paper: str
    source: str
    why: str = ""

    def holds(self, value: float) -> bool:
        return value > self.value if self.above else value < self.value

    def describe(self) -> str:
        return f"{'above' if self.above else 'below'} {_with_unit(self.value, self.unit)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One measured quantity against one threshold; ``values`` per seed (None where undefined)."""

    name: str
    what: str
    values: tuple[float | None, ...]
    threshold: Threshold

    @property
    def finite(self) -> list[float]:
        return [float(v) for v in self.values if v is not None and math.isfinite(v)]

    @property
    def interval(self) -> tuple[float, float] | None:
        found = self.finite
        return (min(found), max(found)) if found else None

    @property
    def mean(self) -> float | None:
        found = self.finite
        return sum(found) / len(found) if found else None

    @property
    def status(self) -> str:
        held = [self.threshold.holds(v) for v in self.finite]
        if not held:
            return UNDECIDED
        return SUPPORTED if all(held) else NOT_SUPPORTED if not any(held) else UNDECIDED

    def sentence(self, cite: bool = True) -> str:
        """``what`` measured, its interval over seeds, against the threshold (and the paper, with ``cite``)."""
        unit, interval = self.threshold.unit, self.interval
        if interval is None:
            measured = "not measured (no finite value)"
        elif len(self.finite) == 1:
            measured = f"{_with_unit(interval[0], unit)} (one seed)"
        else:
            measured = f"{_with_unit(self.mean, unit)} (seeds {_g(interval[0])} to {_g(interval[1])})"
        paper = f"; the paper: {self.threshold.paper}, {self.threshold.source}" if cite else ""
        return f"{self.what}: {measured}, against {self.threshold.describe()} ({self.status}{paper})"

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "name": self.name,
            "what": self.what,
            "status": self.status,
            "values": list(self.values),
            "mean": self.mean,
            "interval": list(interval) if interval else None,
            "threshold": self.threshold.to_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    """The status, the sentence a reader sees, the checks that decided and how settled the nets were."""

    status: str
    text: str
    checks: tuple[Check, ...] = ()
    settling: dict[str, dict[str, Any]] = field(default_factory=dict)
    convergence: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # per judged net, as described

    @property
    def supported(self) -> bool | None:
        return {SUPPORTED: True, NOT_SUPPORTED: False, UNDECIDED: None}[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "supported": self.supported,
            "text": self.text,
            "checks": [c.to_dict() for c in self.checks],
            "settling": self.settling,
            "convergence": self.convergence,
        }


def combine(statuses: Iterable[str]) -> str:
    """Not supported if any is, supported if all are (and there is one), else undecided."""
    statuses = list(statuses)
    if NOT_SUPPORTED in statuses:
        return NOT_SUPPORTED
    return SUPPORTED if statuses and all(s == SUPPORTED for s in statuses) else UNDECIDED


def judged(
    checks: Sequence[Check],
    *,
    found: str = "",
    notes: Sequence[str] = (),
    settling: dict[str, dict[str, Any]] | None = None,
    missing: str = "",
    status: str | None = None,
    trained: Sequence[dict[str, Any]] = (),
) -> Verdict:
    """The verdict of ``checks``: its status, then ``found`` (what was measured, in a sentence), every check
    with its interval, threshold and source, the settling of each run's headline, and ``notes``.

    ``missing`` explains an undecided verdict without checks; ``status`` replaces the combined one where an
    instrument knows better (a net that did not learn decides nothing). ``trained`` are the descriptions of the
    trained nets the verdict rests on: one known to be short of convergence makes it undecided.
    """
    status = status or combine(c.status for c in checks)
    short, far = unconverged(trained)
    if far:
        status = UNDECIDED
    parts = [found.rstrip(".")] if found else []
    parts += [missing.rstrip(".")] if missing and not checks else []
    cited: list[Threshold] = []  # each threshold's paper is quoted once, at its first check
    for check in checks:
        parts.append(check.sentence(cite=check.threshold not in cited))
        cited.append(check.threshold)
    text = f"{status[0].upper()}{status[1:]}: " + "; ".join(parts) + "."
    settling = settling or {}
    moving = [settling_sentence(label, s) for label, s in settling.items() if s.get("settled") is False]
    extra = [*short, *moving, *notes]
    if extra:
        text += " " + " ".join(sentence.rstrip(".") + "." for sentence in extra)
    convergence = {str(run.get("label")): run.get("convergence") for run in trained}
    return Verdict(status, text, tuple(checks), settling, convergence)


def unconverged(trained: Sequence[dict[str, Any]]) -> tuple[list[str], bool]:
    """Sentences for the nets known to be short of convergence, and whether there is one; nets without a
    reference (a run of another net, recipe or data set) are not judged on it."""
    sentences = []
    for run in trained:
        found = run.get("convergence")
        if not found or found.get("converged") is not False:
            continue
        sentences.append(
            f"{run.get('label')} is {found['gap']:.1f} points short of convergence: test error "
            f"{_g(run.get('test_error'))}% after {run.get('steps')} steps against {_g(found['reference_error'])}% for "
            f"its recipe at convergence ({found['reference']}), more than the {_g(found['within'])} point allowed, "
            "so this budget cannot decide the claim"
        )
    return sentences, bool(sentences)


def settling(
    steps: Sequence[int | None],
    values: Sequence[float | None],
    *,
    quantity: str,
    threshold: float | None = None,
    within: float = SETTLED_WITHIN,
) -> dict[str, Any]:
    """Whether a headline quantity followed over a run's kept snapshots had settled by the end of training.

    Settled: the last stretch (between the last two measured points) moved it by at most ``within`` of its
    last value. ``toward_threshold``: it was moving towards ``threshold``, so a longer run could cross it.
    None where fewer than two points were measured.
    """
    points = [(s, float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    result: dict[str, Any] = {
        "quantity": quantity,
        "steps": list(steps),
        "values": list(values),
        "within": within,
        "settled": None,
        "last_change": None,
        "relative_change": None,
        "toward_threshold": None,
    }
    if len(points) < 2:
        return result
    (s0, v0), (s1, v1) = points[-2], points[-1]
    change = v1 - v0
    relative = abs(change) / max(abs(v1), 1e-12)
    result.update(
        last_change=change,
        relative_change=relative,
        settled=relative <= within,
        from_step=s0,
        to_step=s1,
        toward_threshold=None if threshold is None or change == 0 else (threshold - v1) * change > 0,
    )
    return result


def settling_sentence(label: str, found: dict[str, Any]) -> str:
    """One sentence for a quantity that had not settled: its last stretch and what longer training could do."""
    values = [v for v in found["values"] if v is not None]
    text = (
        f"{label}'s {found['quantity']} had not settled: it moved from {_g(values[-2])} (step {found['from_step']}) "
        f"to {_g(values[-1])} (step {found['to_step']}), {found['relative_change']:.0%} over the last stretch"
    )
    if found.get("toward_threshold"):
        return text + ", towards the threshold: longer training could change this verdict"
    if found.get("toward_threshold") is False:
        return text + ", away from the threshold"
    return text


def _with_unit(value: float | None, unit: str) -> str:
    """``2.5 points``, ``0.93x``, ``4``."""
    return _g(value) + ("" if not unit else unit if unit == "x" else f" {unit}")


def _g(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"
