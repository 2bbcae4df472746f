"""Command-line flags generated from a dataclass: each field is ``--field-name``, typed from its hint, with the
help text written once beside the field (``metadata["help"]``).

``resnets train`` makes its recipe flags this way and ``resnets study NAME`` each instrument's options, so a new
field gets its flag without an edit in the CLI. A field's metadata may also carry:

- ``flags``: the flag names to use instead of ``--field-name`` (``("--model",)`` for a field ``models``);
- ``repeat``: a tuple field taken one value per flag, repeatable (``--model a --model b``);
- ``type``: a function that parses the flag's whole value (``20,56,110`` into a tuple);
- ``choices``: the values the flag accepts;
- ``metavar``: the value's name in the help (``NAME`` for ``--model NAME``).

The caller chooses the parser's ``argument_default``; with ``argparse.SUPPRESS`` a flag left out is absent from
the namespace, so it overrides nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from resnets.train.config import NULL_WORDS


def add_dataclass_flags(
    group: argparse._ActionsContainer,
    cls: type,
    *,
    skip: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> dict[str, tuple[argparse.Action, str]]:
    """A flag for every field of the dataclass ``cls`` but ``skip``; returns field name -> (action, help text).

    ``aliases`` adds short names beside a field's own (``-b`` for ``--batch-size``), ``choices`` and ``types``
    replace what the hint would give; the field's metadata (module docstring) is read first.
    """
    hints = typing.get_type_hints(cls)
    aliases, choices, types = aliases or {}, choices or {}, types or {}
    flags: dict[str, tuple[argparse.Action, str]] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        options = flag_options(hints[f.name], repeat=bool(f.metadata.get("repeat")))
        given_type = types.get(f.name) or f.metadata.get("type")
        if given_type is not None:
            options["type"] = given_type
            if "type" in f.metadata:  # the parser reads the whole value itself
                options.pop("nargs", None)
        names = tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))
        names = tuple(sorted((*names, *aliases.get(f.name, ())), key=lambda name: name.startswith("--")))  # -b first
        allowed = choices.get(f.name) or f.metadata.get("choices")
        if "metavar" in f.metadata:
            options["metavar"] = f.metadata["metavar"]
        action = group.add_argument(*names, dest=f.name, choices=allowed, help=text, **options)
        flags[f.name] = (action, text)
    return flags


def flag_options(hint: Any, *, repeat: bool = False) -> dict[str, Any]:
    """argparse options for a field typed ``hint``: bool as --x/--no-x, a tuple as several values (or, with
    ``repeat``, one value per repeated flag), X | None also taking the word none."""
    args = typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"action": "append", "type": args[0]} if repeat else {"nargs": "*", "type": args[0]}
    if type(None) in args and len(args) == 2:
        return {"type": or_none(next(a for a in args if a is not type(None)))}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no command-line flag for a field typed {hint}; teach flag_options the type")


def or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind``, but the words a config file reads as null (``none``, ``null``, ``~``) read as None."""

    def convert(text: str) -> Any:
        return None if text.strip() in NULL_WORDS else kind(text)

    convert.__name__ = kind.__name__  # argparse names it in its error: "invalid float value: 'abc'"
    return convert


def shown_value(value: Any) -> str:
    """A field's value as its flag takes it: ``32000 48000``, ``none``, ``on``/``off``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)
