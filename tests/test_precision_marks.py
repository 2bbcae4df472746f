"""Every test file that trains or evaluates is classified: its numbers depend on the precision decision (run as
both kinds of CPU by scripts/test.sh) or they do not, with the reason (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PRECISION_INDEPENDENT, PRECISION_SENSITIVE

TESTS = Path(__file__).parent


def test_every_training_test_file_is_classified_once() -> None:
    files = {
        p.relative_to(TESTS).as_posix() for folder in ("train", "runs") for p in (TESTS / folder).glob("test_*.py")
    }
    sensitive, independent = set(PRECISION_SENSITIVE), set(PRECISION_INDEPENDENT)
    assert not sensitive & independent
    assert files <= sensitive | independent, f"classify in tests/conftest.py: {sorted(files - sensitive - independent)}"
    assert all((TESTS / name).is_file() for name in sensitive | independent)  # no stale entry
