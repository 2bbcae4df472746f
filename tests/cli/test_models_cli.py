"""``resnets models`` and ``resnets summary`` print computed figures; bad names exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from resnets.cli import COMMAND_MODULES, build_parser, main


def test_models_table_shows_computed_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resnet[25]?"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("resnet20 "))
    assert "269.72K" in line and "40.55M" in line and "3x32x32" in line
    assert any(l.startswith("resnet56 ") and "125.49M" in l for l in out.splitlines())


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resnet50", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {"resnet50", "resnet50d", "se_resnet50", "wide_resnet50_2"} <= set(rows)  # a word matches as a substring
    row = rows["resnet50"]
    assert row["params"] == 25_557_032 and round(row["macs"] / 1e9, 2) == 4.09


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20", "--in-channels", "1", "--input-size", "1", "28", "28"]) == 0
    out = capsys.readouterr().out
    assert "(64, 7, 7)" in out and "stage 3 (3 units)" in out


def test_unknown_model_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet21"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown model 'resnet21'" in err


@pytest.mark.parametrize("command", [None, "models", "summary"])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"] if command is None else [command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: resnets" in capsys.readouterr().out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert len(commands) >= len(COMMAND_MODULES)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0


@pytest.mark.slow
def test_every_registered_model_is_listed_with_its_computed_size(capsys: pytest.CaptureFixture[str]) -> None:
    from resnets import list_models
    from resnets.models.profile import build_meta, count_parameters

    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(rows) == list_models()
    for family in ("highway", "densenet", "resmlp", "transformer", "multires", "looks-linear"):
        assert any(row["family"] == family for row in rows.values()), family
    for name in ("highway_fc_10", "densenet_bc_100_12", "resmlp_learned_20", "seq_encoder_pre_6"):
        assert rows[name]["params"] == count_parameters(build_meta(name))
        assert rows[name]["macs"] > 0
    assert rows["densenet_bc_100_12"]["params"] == 769_162
