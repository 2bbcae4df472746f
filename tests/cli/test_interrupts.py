"""An interrupt that lands where Python ignores exceptions (a weakref callback, a ``__del__``) is not lost."""

from __future__ import annotations

import signal
import time

import pytest

from resnets.cli import terminations_interrupt


class RaisesWhenCollected:
    def __del__(self) -> None:
        raise KeyboardInterrupt("stopped by signal 15")  # what the handler raises, landing in a finaliser


def test_an_interrupt_raised_in_a_finaliser_interrupts_the_command_at_its_next_line() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), terminations_interrupt():
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            pytest.skip("this process ignores SIGINT")
        RaisesWhenCollected()  # collected at once: Python would print "Exception ignored" and go on
        for _ in range(200):  # the re-raised signal lands in ordinary code within a second
            time.sleep(0.01)
        reached.append("after")
    assert "after" not in reached


def test_other_unraisable_exceptions_reach_the_previous_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(type(u.exc_value)))

    class RaisesValueError:
        def __del__(self) -> None:
            raise ValueError("not an interrupt")

    with terminations_interrupt():
        RaisesValueError()
    assert seen == [ValueError]


def test_a_command_that_swallowed_a_signals_interrupt_still_ends_as_interrupted(monkeypatch, capsys) -> None:
    from resnets import cli

    def swallowing(args) -> int:  # a library's catch-all around an import that the signal interrupted
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException:  # noqa: BLE001, S110
            pass
        raise cli.ResnetsError("the training split has 12 samples")  # what the command met next

    from resnets.cli import models

    monkeypatch.setattr(models, "run_models", swallowing)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["resnets models: stopped by signal 15"]


def test_a_signal_during_an_import_interrupts_after_it_not_inside_it(tmp_path, monkeypatch) -> None:
    """Importing torch runs Python callbacks from C++; an interrupt raised inside one ends the process with
    std::terminate (status -6). A signal during an import waits for the import, then interrupts."""
    import sys

    (tmp_path / "slow_module_for_the_test.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "for _ in range(20):\n"
        "    time.sleep(0.01)  # the handler runs here, inside the import\n"
        "FINISHED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reached = []
    with pytest.raises(KeyboardInterrupt, match="stopped by signal 15"), terminations_interrupt():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            pytest.skip("this process ignores SIGTERM")
        try:
            import slow_module_for_the_test  # noqa: F401
        finally:
            sys.modules.pop("slow_module_for_the_test", None)
        reached.append("imported")  # the import ran to its end, uninterrupted
        for _ in range(200):  # the interrupt lands in ordinary code within a second
            time.sleep(0.01)
        reached.append("after")
    assert reached == ["imported"]
