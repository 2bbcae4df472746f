"""The contract every instrument keeps, and the context it measures in.

An instrument is a module of ``resnets.studies`` with:

- ``NAME`` and ``CLAIM`` (the claim tested, with its source) and ``THRESHOLDS`` (name -> :class:`Threshold`,
  each beside the paper's own number);
- ``Options``: a frozen dataclass of its own settings, each field made with :func:`option` (default and help
  text), from which ``resnets study NAME`` generates its flags (``resnets.cli.dataclass_flags``);
- ``measure(options, context) -> numbers``: everything measured, JSON-able, with ``numbers["settings"]``
  describing how; the device, the precision, the data and where to train come from the :class:`Context`;
- ``judge(numbers) -> Verdict`` (:mod:`resnets.studies.verdict`), from the numbers alone;
- ``render(numbers, out) -> (table, figures)``: the Markdown table and the PNG files written into ``out``.

:mod:`resnets.studies.runner` runs them and writes the files, so a verdict or a figure can be rebuilt from
``NAME.json`` alone and ``judge`` can be tested on canned numbers, without training.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from resnets.device import Precision, resolve_device, resolve_precision
from resnets.errors import ConfigError
from resnets.studies.progress import progress

#: What ``--precision`` takes: fp32 (the default, the same numbers on every CPU) or the device's fast precision.
PRECISIONS = ("fp32", "fast")
#: What ``--budget`` takes: minutes on a CPU, or the papers' settings (for a GPU).
BUDGETS = ("cpu", "paper")


def option(default: Any, help: str, **flag: Any) -> Any:
    """A field of an instrument's Options (or of the Context): its default and its help text, written once.

    ``flag`` goes to the field's metadata for the flag generator: ``flags`` (names), ``repeat``, ``type``
    (a parser of the whole value), ``choices``, ``metavar``; ``sep`` says how ``type`` joins values back (``,``),
    ``shown`` what ``--help`` calls a default that stands for another (None for fashion-mnist).
    """
    return field(default=default, metadata={"help": help, **flag})


def comma_ints(text: str) -> tuple[int, ...]:
    """``20,56,110`` as (20, 56, 110): the flags that take a list of positive integers."""
    import argparse

    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 20,56,110, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 20,56,110, got {text!r}")
    return values


#: The metadata of a field given as comma-separated integers (``--depths 20,56,110``).
INTS = {"type": comma_ints, "sep": ","}


def models_option(help: str) -> Any:
    """``--model NAME``, repeatable: the registered models an instrument trains or measures (none: its default)."""
    return option((), f"{help} (repeatable)", flags=("--model",), repeat=True, metavar="NAME")


@dataclass(frozen=True)
class InstrumentOptions:
    """The base of every instrument's ``Options``: every integer setting must be positive."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # from a JSON file or the command line: options are immutable
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            numbers = value if isinstance(value, tuple) else (value,)
            if int in (hints[f.name], *typing.get_args(hints[f.name])):
                bad = [v for v in numbers if isinstance(v, int) and not isinstance(v, bool) and v < 1]
                if bad:
                    flag = "--" + f.name.replace("_", "-")
                    raise ConfigError(f"{flag} must be positive, got {bad[0]}")


@dataclass(frozen=True)
class TrainedOptions(InstrumentOptions):
    """Options of the instruments that measure trained nets: which runs, or which default runs to train."""

    models: tuple[str, ...] = models_option("a registered model whose default run is trained and measured")
    runs: tuple[str, ...] = option(
        (),
        "a run directory trained elsewhere, measured instead (repeatable)",
        flags=("--run",),
        repeat=True,
        metavar="RUN_DIR",
    )
    steps: int | None = option(None, "optimiser steps of the default runs")


@dataclass(frozen=True)
class Context:
    """Where and how every instrument measures: shared by all of them, given once to ``resnets study``."""

    data: str | None = option(
        None, "data set of the default runs and the measurements: a name or a path", shown="fashion-mnist"
    )
    data_dir: str | None = option(None, "where the named data set lives", metavar="DIR")
    budget: str = option(
        "cpu",
        "training budget of the default runs: cpu (minutes) or paper (the paper's schedule, for a GPU)",
        choices=BUDGETS,
    )
    out: str = option(
        "studies", "output directory: OUT/NAME.json, OUT/NAME.md, OUT/NAME-*.png and OUT/runs", metavar="OUT"
    )
    device: str = option("cpu", "cpu, cuda or cuda:N")
    precision: str = option(
        "fp32",
        "fp32 (the same numbers on every CPU) or fast: bf16 autocast where the device computes bf16 natively, "
        "for the default runs' training and every measurement; the JSON, Markdown and report say which",
        choices=PRECISIONS,
    )
    quiet: bool = option(False, "no progress output")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")

    def measuring_precision(self) -> Precision:
        """What default runs train in and every number is measured in: fp32, or the device's fast precision."""
        return resolve_precision(resolve_device(self.device), False if self.precision == "fp32" else None, None)

    @property
    def precision_mode(self) -> str:
        """``fp32`` or ``bf16 autocast``: what the JSON, Markdown and report say."""
        return self.measuring_precision().mode

    def progress(self, items: Iterable[Any], desc: str) -> Iterator[Any]:
        """``items`` with progress on stderr (a bar on a terminal, lines in a log), silent when quiet."""
        return progress(items, desc=desc, quiet=self.quiet)

    def described(self) -> dict[str, Any]:
        """The settings a reader of the JSON needs (not where the files went)."""
        return {"data": self.data, "budget": self.budget, "device": self.device, "precision": self.precision_mode}
