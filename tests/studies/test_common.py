"""The frame every instrument shares: the contract, each instrument's own help and defaults, the shared
helpers, and ``study all``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import types
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.cli.study import command_line
from resnets.errors import ConfigError, UnknownNameError
from resnets.studies import STUDIES, Context, get_study
from resnets.studies.common import spread
from resnets.studies.contract import InstrumentOptions
from resnets.studies.figures import new_figure, save_figure
from resnets.studies.untrained import build_near
from resnets.studies.verdict import Check, Threshold, Verdict, judged

THRESHOLD = Threshold(1.0, above=False, unit="x", paper="below one in the paper", source="Someone 2016, Fig. 1")


def test_help_lists_every_instrument(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:  # as argparse's --help of every other command
        main(["study", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    names = ["gradients", "responses", "lesion", "paths", "shattered", "iterative", "signal", "gates"]
    names += ["degradation", "landscape", "hessian", "scaling", "dynamics"]
    assert list(STUDIES) == names
    assert all(f"  {name} " in out for name in names)


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_instrument_keeps_the_contract(name: str) -> None:
    module = importlib.import_module(f"resnets.studies.{name}")
    assert module.NAME == name and re.search(r"\(.*\d{4}.*\)", module.CLAIM)  # the claim names its source
    assert dataclasses.is_dataclass(module.Options) and issubclass(module.Options, InstrumentOptions)
    assert all(callable(getattr(module, f)) for f in ("measure", "judge", "render"))
    assert module.THRESHOLDS and all(isinstance(t, Threshold) for t in module.THRESHOLDS.values())
    for threshold in module.THRESHOLDS.values():  # each line stands next to the paper's number and its place
        assert threshold.paper and threshold.source and threshold.why
    for field in dataclasses.fields(module.Options):
        assert field.metadata["help"], field.name  # every option has its help text beside it
    module.Options()  # the defaults are valid


def test_an_instruments_help_shows_its_own_options_and_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "landscape", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: resnets study landscape" in out and "landscape options:" in out
    assert "--grid GRID points per axis of the 2-D surface (9 divides the 1-D line's spacing) (default: 9)" in out
    assert "--samples SAMPLES training images per evaluation" in out and "(default: 1000)" in out
    assert "(default: cpu: speedrun_plain-w16-d56 speedrun-w16-d56)" in out  # --model: DEFAULT_RUNS' runs
    assert "--precision {fp32,fast}" in out and "--out OUT" in out and "(default: studies)" in out
    assert "--depths" not in out  # another instrument's option
    with pytest.raises(SystemExit):
        main(["study", "degradation", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: cpu: 936; paper: 64000)" in out and "(default: cpu: 20,56; paper: 20,32,44,56,110)" in out


def test_unknown_study_and_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UnknownNameError, match="unknown study 'lesions'.*lesion"):
        get_study("lesions")
    assert main(["study", "lesions"]) == 2
    assert "unknown study 'lesions'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "gradients", "--depths", "20,x"])
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "lesion", "--depths", "20"])  # lesion has no depth sweep
    assert "unrecognized arguments: --depths" in capsys.readouterr().err
    assert main(["study", "lesion", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--seeds must be positive, got 0" in err
    assert main(["study"]) == 2
    assert "name an instrument" in capsys.readouterr().err


def test_the_command_line_reproduces_the_options_that_differ(tmp_path: Path) -> None:
    gradients = get_study("gradients")
    options = gradients.Options(models=("resnet20", "plain20"), depths=(8, 14), seeds=2)
    context = Context(out=str(tmp_path), precision="fast", quiet=True)
    expected = "resnets study gradients --model resnet20 --model plain20 --depths 8,14 --seeds 2"
    assert command_line("gradients", options, context) == f"{expected} --out {tmp_path} --precision fast"


def test_spread_matches_a_hand_computation() -> None:
    stats = spread([1.0, 2.0, 4.0])
    assert stats["mean"] == pytest.approx(7 / 3)
    assert stats["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert (stats["min"], stats["max"], stats["n"]) == (1.0, 4.0, 3)
    assert spread([5.0])["std"] == 0.0
    with_nan = spread([1.0, math.nan, 3.0, math.inf, None])
    assert (with_nan["mean"], with_nan["n"], with_nan["dropped"]) == (2.0, 2, 3)


def test_build_near_tries_the_nearest_depths_only_for_families_with_a_sweep() -> None:
    with pytest.raises(ConfigError, match="no depth sweep"):  # no nearby depth is tried for a family that has none
        build_near("densenet121", 100, seed=0)
    model, depth = build_near("highway_cifar19", 56, seed=0)  # 3n+4 layers: 55 is the nearest
    assert depth == 55 and len(model.residual_blocks()) == 3 * 17


def _fake(name: str, ran: list) -> types.SimpleNamespace:
    """An instrument that measures nothing: the seeds it was given decide its one check."""

    @dataclasses.dataclass(frozen=True)
    class Options(InstrumentOptions):
        seeds: int = dataclasses.field(default=3, metadata={"help": "repetitions"})

    def measure(options: Options, context: Context) -> dict:
        ran.append((name, options, context))
        return {"settings": {"kind": "fake"}, "ratios": [0.5 + 0.1 * s for s in range(options.seeds)]}

    def judge(numbers: dict) -> Verdict:
        return judged([Check("ratio", f"{name}'s ratio", tuple(numbers["ratios"]), THRESHOLD)])

    def render(numbers: dict, out: Path) -> tuple[str, list[Path]]:
        figure, ax = new_figure()
        ax.plot(numbers["ratios"])
        return "| ratio |\n|---|\n" + "".join(f"| {r:.2f} |\n" for r in numbers["ratios"]), [
            save_figure(figure, out, f"{name}-fig")
        ]

    return types.SimpleNamespace(
        NAME=name, CLAIM=f"claim {name} (Someone 2016).", THRESHOLDS={"ratio": THRESHOLD}, Options=Options,
        measure=measure, judge=judge, render=render,
    )  # fmt: skip


def test_study_all_refuses_options_that_mean_different_things_to_each_instrument(capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "all", "--model", "resnet20"]) == 2
    assert "one instrument at a time" in capsys.readouterr().err


def test_study_all_runs_every_instrument_then_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from resnets import studies

    ran: list = []
    fakes = {name: _fake(name, ran) for name in ("gradients", "hessian")}
    monkeypatch.setattr(studies, "STUDIES", {"gradients": "g", "hessian": "h"})
    monkeypatch.setattr(studies, "get_study", fakes.__getitem__)
    assert main(["study", "all", "--seeds", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert [name for name, _, _ in ran] == ["gradients", "hessian"] and all(o.seeds == 2 for _, o, _ in ran)
    saved = json.loads((tmp_path / "hessian.json").read_text())
    assert saved["command"] == f"resnets study hessian --seeds 2 --out {tmp_path}"
    assert saved["status"] == "supported" and saved["checks"][0]["interval"] == [0.5, 0.6]
    page = (tmp_path / "report.html").read_text()
    assert "hessian&#x27;s ratio: 0.55x (seeds 0.5 to 0.6), against below 1x (supported" in page
    assert f"wrote {tmp_path / 'report.html'}" in capsys.readouterr().out
