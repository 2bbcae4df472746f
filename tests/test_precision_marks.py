"""Every test file that trains or evaluates is classified: its numbers depend on the precision decision (run as
both kinds of CPU by scripts/test.sh) or they do not, with the reason (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PRECISION_INDEPENDENT, PRECISION_SENSITIVE, pytest_collection_modifyitems

TESTS = Path(__file__).parent


def test_every_training_test_file_is_classified_once() -> None:
    files = {
        p.relative_to(TESTS).as_posix() for folder in ("train", "runs") for p in (TESTS / folder).glob("test_*.py")
    }
    sensitive, independent = set(PRECISION_SENSITIVE), set(PRECISION_INDEPENDENT)
    assert not sensitive & independent
    assert files <= sensitive | independent, f"classify in tests/conftest.py: {sorted(files - sensitive - independent)}"
    assert all((TESTS / name).is_file() for name in sensitive | independent)  # no stale entry


class _Item:
    """What pytest_collection_modifyitems reads of a collected test: its file and its markers."""

    def __init__(self, file: str, *markers: pytest.MarkDecorator) -> None:
        self.path = TESTS / file
        self.markers = [mark.mark for mark in markers]

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((mark for mark in self.markers if mark.name == name), None)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker.mark)


def test_a_test_that_pins_its_precision_runs_once_and_its_file_stays_sensitive() -> None:
    pinned = _Item("train/test_finetune.py", pytest.mark.pinned_precision("--no-amp"))
    neighbour = _Item("train/test_finetune.py")
    elsewhere = _Item("train/test_schedule.py")
    pytest_collection_modifyitems(None, [pinned, neighbour, elsewhere])  # type: ignore[arg-type]
    assert [item.get_closest_marker("precision") is not None for item in (pinned, neighbour, elsewhere)] == [
        False,
        True,
        False,
    ]
