"""The installed package carries its PEP 561 marker, so type checkers read its hints."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

import resnets


def test_py_typed_is_in_the_package_and_in_its_package_data() -> None:
    marker = importlib.resources.files("resnets") / "py.typed"
    assert marker.is_file() and marker.read_bytes() == b""  # an empty marker: the whole package is typed
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = Path(resnets.__file__).parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("installed from a wheel: no pyproject.toml beside the package")
    # setuptools 69+ ships py.typed by itself; 68, which the build requires allow, only when package-data says so.
    assert tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["resnets"] == ["py.typed"]
