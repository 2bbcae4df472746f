"""The schema layer: every failure is one line naming the file, the field, the value and what was expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resnets.errors import ConfigError
from resnets.io.schema import (
    COUNT,
    NATURAL,
    FieldError,
    SchemaError,
    between,
    check_object,
    each,
    one_of,
    optional,
    parse_json,
    read_json,
    read_text,
)


def test_rules_say_what_they_expect() -> None:
    assert between(0, 1, open_high=True)[1] == "a finite number in [0, 1)"
    assert between(1, 8192, integer=True)[1] == "an integer in [1, 8,192]"
    assert optional(COUNT)[1] == "an integer >= 1, or null"
    assert each(NATURAL, at_most=3)[1] == "a list (at most 3), each an integer >= 0"
    test = between(0, 1, open_high=True)[0]
    assert [test(v) for v in (0, 0.5, 1, float("nan"), True, "0.5")] == [True, True, False, False, False, False]
    assert not each(NATURAL, at_most=2)[0]([1, 2, 3]) and not one_of(("a", "b"))[0](["a"])


def test_a_schema_error_names_file_field_value_and_expectation() -> None:
    rules = {"num_classes": between(1, 100_000, integer=True), "model": (lambda v: isinstance(v, str), "a name")}
    with pytest.raises(SchemaError) as error:
        check_object({"num_classes": 10**9, "model": "x"}, rules, "run/config.json")
    assert str(error.value) == (
        "run/config.json: field 'num_classes' is 1000000000; expected an integer in [1, 100,000]"
    )
    with pytest.raises(SchemaError, match=r"^run/config.json: field 'data.model' is missing; expected a name$"):
        check_object({}, rules, "run/config.json", required=("model",), prefix="data.")
    with pytest.raises(SchemaError, match=r"^m.json: it holds \[1, 2\]; expected a JSON object$"):
        check_object([1, 2], rules, "m.json")
    with pytest.raises(SchemaError, match=r"field 'model' is \['xxxxxxxxx.*\.\.\.; expected a name$"):
        check_object({"model": ["x" * 10_000]}, rules, "m.json")  # a long value is cut: the line stays readable


def test_field_errors_of_flags_keep_their_wording() -> None:
    assert str(FieldError("lr", float("nan"), "a finite number > 0")) == "lr must be a finite number > 0, got nan"
    assert str(FieldError("lr", 2, "x", "the file f.yaml")) == "the file f.yaml: lr must be x, got 2"


def test_text_is_read_whole_only_when_it_is_small_utf8_from_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"lr: 0.1\n\xc3\x28")
    with pytest.raises(ConfigError, match=r"config file .*c\.yaml' is not UTF-8 text \(byte 0xc3 at offset 8\)"):
        read_text(path, "config file")
    path.write_bytes("\ufefflr: 0.1\n".encode())
    assert read_text(path, "config file") == "lr: 0.1\n"  # a byte-order mark is not content
    with pytest.raises(ConfigError, match="is larger than 4 bytes"):
        read_text(path, "config file", at_most=4)
    with pytest.raises(ConfigError, match="does not exist"):
        read_text(tmp_path / "missing", "config file")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError, match="is a named pipe"):
        read_text(tmp_path / "pipe", "config file")  # refused before open: a reader would block


def test_json_that_is_broken_or_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not valid JSON \(Expecting value at line 1, column 7\)"):
        parse_json('{"a": }', "x.json")
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    (tmp_path / "m.json").write_text('{"step": 1}')
    assert read_json(tmp_path / "m.json", "manifest") == {"step": 1}
