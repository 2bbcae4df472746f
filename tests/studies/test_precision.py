"""Instruments give the same numbers on every CPU: fp32 by default, the fast precision only when asked for,
and every file says which precision its numbers came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.studies.report import write_report

LESION = ["study", "lesion", "--seeds", "1", "--samples", "12", "--steps", "4", "--model", "resnet20", "--quiet"]


def _lesion(data: Path, out: Path, *extra: str) -> dict:
    assert main([*LESION, "--data", str(data), "--out", str(out), *extra]) == 0
    return json.loads((out / "lesion.json").read_text())


def _without_paths(numbers: object) -> object:
    """The numbers without the run directories they name (each study trained its own, in its own --out)."""
    if isinstance(numbers, dict):
        return {key: _without_paths(value) for key, value in numbers.items() if key != "run"}
    if isinstance(numbers, list):
        return [_without_paths(value) for value in numbers]
    return numbers


def test_a_study_writes_the_same_numbers_whichever_cpu_it_plays(batch_bars: Path, tmp_path: Path, play_cpu) -> None:
    play_cpu(native_bf16=True)  # as a CPU with AVX512-BF16 would: its default runs would train in bf16 before
    as_bf16_cpu = _lesion(batch_bars, tmp_path / "bf16-cpu")
    play_cpu(native_bf16=False)
    as_fp32_cpu = _lesion(batch_bars, tmp_path / "fp32-cpu")
    assert as_bf16_cpu["precision"] == as_fp32_cpu["precision"] == "fp32"
    assert _without_paths(as_bf16_cpu["numbers"]) == _without_paths(as_fp32_cpu["numbers"])  # bit for bit
    assert as_bf16_cpu["numbers"]["models"]["resnet20"]["baseline_error"]["n"] == 1
    record = json.loads(next((tmp_path / "bf16-cpu" / "runs").glob("resnet20-*/config.json")).read_text())
    assert record["amp"] is False  # the study's own run trained in fp32 on the "bf16" CPU
    assert "Precision: fp32." in (tmp_path / "bf16-cpu" / "lesion.md").read_text()


def test_fast_precision_is_asked_for_and_said_everywhere(batch_bars: Path, tmp_path: Path, play_cpu) -> None:
    play_cpu(native_bf16=True)
    out = tmp_path / "studies"
    fast = _lesion(batch_bars, out, "--precision", "fast")
    assert fast["precision"] == "bf16 autocast" and fast["command"].endswith("--precision fast")
    (run,) = (out / "runs").glob("resnet20-*")
    assert run.name.endswith("-bf16") and json.loads((run / "config.json").read_text())["amp"] is True
    assert "Precision: bf16 autocast." in (out / "lesion.md").read_text()

    play_cpu(native_bf16=False)  # the fast precision of a CPU without bf16 is fp32
    assert _lesion(batch_bars, tmp_path / "other", "--precision", "fast")["precision"] == "fp32"


def test_the_report_marks_studies_measured_in_different_precisions(tmp_path: Path) -> None:
    def study(name: str, precision: str | None) -> None:
        payload = {"claim": f"claim {name}", "verdict": f"verdict {name}", "supported": True, "table": ""}
        if precision is not None:
            payload["precision"] = precision
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))

    study("gradients", "fp32")
    study("lesion", "fp32")
    report = write_report(tmp_path)
    assert "Mixed precisions" not in report.markdown.read_text()
    assert "| fp32 |" in report.markdown.read_text()

    study("paths", "bf16 autocast")
    study("hessian", None)  # a JSON from before precisions were recorded
    report = write_report(tmp_path)
    text = report.markdown.read_text()
    expected = (
        "**Mixed precisions.** these studies were measured in 3 precisions (fp32: gradients, lesion; bf16 autocast: "
        "paths; not recorded: hessian)"
    )
    assert expected in text
    assert "Mixed precisions." in report.html.read_text()


def test_an_unknown_precision_is_refused_with_the_choices(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "lesion", "--precision", "bf16"])
    assert exit_info.value.code == 2
    assert "--precision: invalid choice: 'bf16' (choose from 'fp32', 'fast')" in capsys.readouterr().err
