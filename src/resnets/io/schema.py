"""The one typed layer for what is read from files and flags: rules for values, bounds for sizes, readers for text.

Everything read from a file is checked here before it is used: run records, checkpoint manifests, snapshot
lists, export metadata, config files, label columns, and the recipe and run values of ``resnets train``. A value
passes its :data:`Rule` (a test and the words that say what it expects) or is one :class:`SchemaError` line
naming the file, the field, the value and the expectation. Sizes have bounds (:data:`MAX_CLASSES`,
:data:`MAX_SIDE`, ...) so that no file or flag can ask for terabytes before anything is allocated, numbers must
be finite, and text must decode as UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.io.regular import not_regular

#: Classes a run, a label column or an export may have (ImageNet-21k has 21,843).
MAX_CLASSES = 100_000
#: Pixels of an image side (predict refuses images of more than MAX_PIXELS from their header).
MAX_SIDE = 8192
MAX_PIXELS = 64 * 2**20  # 8192 x 8192, 200 MB as RGB
MAX_CHANNELS = 4096  # image channels, or features per token of a sequence model
MAX_FEATURES = 2**24  # features of one vector sample
MAX_SAMPLE_VALUES = 2**28  # values of one sample of any kind: 1 GiB as float32
#: The largest text file read whole (records, manifests, config files): real ones are a few kilobytes.
MAX_TEXT_BYTES = 64 * 2**20
#: Characters of a value shown in an error line.
_SHOWN = 80
FLOAT32_MAX = 3.4028234663852886e38  # what torch's float32 optimiser steps accept as a learning rate or decay

#: A field's rule: a test of its value and the words that say what the test expects.
Rule = tuple[Callable[[Any], bool], str]


class FieldError(ConfigError):
    """A value outside its rule; ``key`` lets the caller say where the value came from (file or flag)."""

    def __init__(self, key: str, value: Any, expected: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} must be {expected}, got {shown(value)}")
        self.key, self.value, self.expected, self.source = key, value, expected, source


class SchemaError(FieldError):
    """A file whose content breaks its schema: names the file, the field, the value and the expectation."""

    def __init__(self, key: str, value: Any, expected: str, source: str | None = None) -> None:
        super().__init__(key, value, expected, source)
        where = f"{source}: " if source else ""
        if value is MISSING:
            self.args = (f"{where}field {key!r} is missing; expected {expected}",)
        else:
            field = f"field {key!r} is" if key != WHOLE else "it holds"
            self.args = (f"{where}{field} {shown(value)}; expected {expected}",)


#: The field name of a whole file's content, and the value of a field that is absent, in a SchemaError.
WHOLE = "the content"
MISSING = object()


def shown(value: Any) -> str:
    """``repr(value)`` on one line, cut to a readable length (a value from a file can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


POSITIVE: Rule = (lambda v: is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE: Rule = (lambda v: is_number(v) and v >= 0, "a finite number >= 0")
COUNT: Rule = (lambda v: is_integer(v) and v >= 1, "an integer >= 1")
NATURAL: Rule = (lambda v: is_integer(v) and v >= 0, "an integer >= 0")
FLAG: Rule = (lambda v: isinstance(v, bool), "true or false")
TEXT: Rule = (lambda v: isinstance(v, str), "a string")
NUMBER: Rule = (is_number, "a finite number")
SHA256: Rule = (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "a sha256 in hex")


def between(low: float, high: float, *, integer: bool = False, open_high: bool = False) -> Rule:
    """A finite number (an integer with ``integer``) in [low, high], or [low, high) with ``open_high``."""
    kind = is_integer if integer else is_number
    bracket = ")" if open_high else "]"
    words = f"{'an integer' if integer else 'a finite number'} in [{_plain(low)}, {_plain(high)}{bracket}"
    return (lambda v: kind(v) and low <= v and (v < high if open_high else v <= high), words)


def _plain(number: float) -> str:
    return f"{number:,}" if isinstance(number, int) else f"{number:g}"


def optional(rule: Rule) -> Rule:
    """The rule, or None (left to the data or the machine)."""
    test, words = rule
    return (lambda v: v is None or test(v), f"{words}, or null")


def each(rule: Rule, *, at_most: int | None = None) -> Rule:
    """A list of values that each pass the rule (and at most ``at_most`` of them)."""
    test, words = rule
    limit = f" (at most {at_most:,})" if at_most is not None else ""
    return (
        lambda v: isinstance(v, (list, tuple)) and (at_most is None or len(v) <= at_most) and all(test(x) for x in v),
        f"a list{limit}, each {words}",
    )


def one_of(choices: tuple[Any, ...]) -> Rule:
    return (lambda v: isinstance(v, type(choices[0])) and v in choices, f"one of {list(choices)}")


def text(at_most: int = 4096) -> Rule:
    """A string of at most ``at_most`` characters."""
    return (lambda v: isinstance(v, str) and len(v) <= at_most, f"a string of at most {at_most:,} characters")


def mapping() -> Rule:
    return (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a JSON object")


def check_fields(obj: Any, rules: Mapping[str, Rule], source: str | None = None) -> None:
    """Raise FieldError for the first attribute of ``obj`` that breaks its rule, in the order of ``rules``."""
    for key, (test, expected) in rules.items():
        value = getattr(obj, key)
        if not test(value):
            raise FieldError(key, value, expected, source)


def check_object(
    raw: Any, rules: Mapping[str, Rule], source: str, *, required: tuple[str, ...] = (), prefix: str = ""
) -> dict[str, Any]:
    """``raw`` as a JSON object whose fields pass ``rules`` (fields without a rule are kept unchecked).

    ``required`` fields must be present; ``prefix`` is the object's own place (``data.``) in error lines.
    """
    if not isinstance(raw, dict):
        raise SchemaError(prefix.rstrip(".") or WHOLE, raw, "a JSON object", source)
    missing = [key for key in required if key not in raw]
    if missing:
        expected = rules[missing[0]][1] if missing[0] in rules else "present"
        raise SchemaError(prefix + missing[0], MISSING, expected, source)
    for key, (test, expected) in rules.items():
        if key in raw and not test(raw[key]):
            raise SchemaError(prefix + key, raw[key], expected, source)
    return raw


def read_text(path: str | Path, what: str, *, at_most: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, or one line saying why not (missing, not a file, too large, not UTF-8)."""
    path = Path(path)
    why = not_regular(path)
    if why is not None:
        raise ConfigError(f"{what} {str(path)!r} {why}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(at_most + 1)
    except OSError as error:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {error.strerror or error}") from None
    if len(data) > at_most:
        raise ConfigError(f"{what} {str(path)!r} is larger than {at_most:,} bytes; expected a small text file")
    return decode_text(data, f"{what} {str(path)!r}")


def decode_text(data: bytes, where: str) -> str:
    """``data`` as UTF-8 (a BOM is allowed), or one line naming the first byte that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); save it as UTF-8"
        ) from None


def parse_json(text: str, where: str) -> Any:
    """JSON text, or one line saying where it breaks (too deep a nesting included)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{where} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where} is not usable JSON (nested too deeply)") from None


def read_json(path: str | Path, what: str, *, at_most: int = MAX_TEXT_BYTES) -> Any:
    """The JSON value of ``path``, read through :func:`read_text`."""
    return parse_json(read_text(path, what, at_most=at_most), f"{what} {str(path)!r}")
