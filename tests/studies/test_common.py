"""The frame every instrument shares: the command's help, spread, depth sweeps and the files a study writes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.errors import ConfigError, UnknownNameError
from resnets.studies import STUDIES, get_study
from resnets.studies.common import (
    NoDepthSweep,
    StudyOptions,
    StudyResult,
    model_at_depth,
    new_figure,
    save_figure,
    spread,
    write_study,
)
from resnets.studies.untrained import build_near
from resnets.train import weighted_depth


def test_help_lists_every_instrument(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    names = ["gradients", "responses", "lesion", "paths", "shattered", "iterative", "signal", "gates"]
    names += ["degradation", "landscape", "hessian", "scaling", "dynamics"]
    assert list(STUDIES) == names
    assert all(f"  {name} " in out for name in names)
    assert all(importlib.util.find_spec(f"resnets.studies.{module}") for module, _ in STUDIES.values())


def test_unknown_study_and_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UnknownNameError, match="unknown study 'lesions'.*lesion"):
        get_study("lesions")
    with pytest.raises(SystemExit):
        main(["study", "lesion", "--depths", "20,x"])
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["study", "lesion", "--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_spread_matches_a_hand_computation() -> None:
    stats = spread([1.0, 2.0, 4.0])
    assert stats["mean"] == pytest.approx(7 / 3)
    assert stats["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert (stats["min"], stats["max"], stats["n"]) == (1.0, 4.0, 3)
    assert spread([5.0])["std"] == 0.0
    with_nan = spread([1.0, math.nan, 3.0, math.inf])
    assert (with_nan["mean"], with_nan["n"], with_nan["dropped"]) == (2.0, 2, 2)


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet20", 32), ("plain20", 56), ("plain_ll_cifar20", 32), ("highway_fc_10", 30), ("resmlp_identity_20", 12)],
)
def test_model_at_depth_counts_weighted_layers(name: str, depth: int) -> None:
    model = model_at_depth(name, depth)
    if name.startswith(("resnet", "plain")):
        assert weighted_depth(model) == depth  # the paper's count: stem + 2 convs per block + classifier
    else:
        assert model.config.depth == depth  # fully connected Highway nets and residual MLPs take it directly


def test_depths_that_do_not_fit_and_models_without_a_sweep_are_refused() -> None:
    with pytest.raises(ConfigError, match="depth 21 does not fit 'resnet20': it takes 6n\\+2 layers"):
        model_at_depth("resnet20", 21)
    with pytest.raises(NoDepthSweep, match="no depth sweep"):
        model_at_depth("densenet121", 100)
    with pytest.raises(NoDepthSweep):  # no nearby depth is tried for a family that has none
        build_near("densenet121", 100, seed=0)
    model, depth = build_near("highway_cifar19", 56, seed=0)  # 3n+4 layers: 55 is the nearest
    assert depth == 55 and len(model.residual_blocks()) == 3 * 17


def test_write_study_writes_json_markdown_and_keeps_figures(tmp_path: Path) -> None:
    figure, axes = new_figure()
    axes.plot([0, 1], [1, 0], label="line")
    axes.set_xlabel("x")
    png = save_figure(figure, tmp_path, "demo-figure")
    result = StudyResult(
        name="demo",
        claim="A claim (Someone 2016).",
        verdict="The numbers support it.",
        supported=True,
        settings={"seeds": 3, "bn": "train"},
        numbers={"value": 1.5, "missing": math.nan},
        table="| a |\n|---|\n| 1 |",
        figures=[png],
        command="resnets study demo --seeds 3",
    )
    paths = write_study(result, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["numbers"] == {"value": 1.5, "missing": None} and saved["figures"] == ["demo-figure.png"]
    text = paths["md"].read_text()
    assert "A claim (Someone 2016)." in text and "Verdict (supported)" in text and "![demo-figure]" in text
    assert "resnets study demo --seeds 3" in text and png.read_bytes()[:4] == b"\x89PNG"


def test_study_all_refuses_options_that_mean_different_things_to_each_instrument(capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "all", "--model", "resnet20"]) == 2
    assert "one instrument at a time" in capsys.readouterr().err


def test_study_all_runs_every_instrument_then_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import types

    from resnets import studies

    ran: list[tuple[str, StudyOptions]] = []

    def fake(name: str) -> types.ModuleType:
        def run(options: StudyOptions) -> StudyResult:
            ran.append((name, options))
            figure, ax = new_figure()
            ax.plot([0, 1], [1, 0])
            png = save_figure(figure, options.out, f"{name}-fig")
            return StudyResult(name, f"claim {name}", f"verdict {name}", True, {}, {}, "| a |\n|---|\n| 1 |", [png])

        return types.SimpleNamespace(run=run)

    monkeypatch.setattr(studies, "STUDIES", {"gradients": ("gradients", "g"), "hessian": ("hessian", "h")})
    monkeypatch.setattr(studies, "get_study", fake)
    assert main(["study", "all", "--seeds", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert [name for name, _ in ran] == ["gradients", "hessian"] and all(o.seeds == 2 for _, o in ran)
    saved = json.loads((tmp_path / "hessian.json").read_text())
    assert saved["command"] == f"resnets study hessian --seeds 2 --out {tmp_path}"
    page = (tmp_path / "report.html").read_text()
    assert "verdict gradients" in page and "verdict hessian" in page
    assert f"wrote {tmp_path / 'report.html'}" in capsys.readouterr().out
