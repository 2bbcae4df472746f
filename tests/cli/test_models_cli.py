"""``resnets models`` and ``resnets summary`` print computed figures; bad names and sizes exit 2 with one line;
``help(create_model)`` lists each family's options."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import resnets
from resnets.cli import COMMAND_MODULES, build_parser, main
from resnets.models import profile
from resnets.models.densenet import DenseNetConfig
from resnets.models.resmlp import ResMLPConfig
from resnets.models.resnet import ResNetConfig


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts from an empty count cache of its own, never the user's."""
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _refuse(*args, **kwargs):
    raise AssertionError("called where it must not be")


def test_models_table_shows_computed_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resnet[25]?", "--macs"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("resnet20 "))
    assert "269.72K" in line and "40.55M" in line and "3x32x32" in line
    assert any(l.startswith("resnet56 ") and "125.49M" in l for l in out.splitlines())


def test_models_default_table_counts_parameters_without_the_mac_counter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile, "count_macs", _refuse)
    assert main(["models", "resnet2?"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["model", "family", "params", "input"]  # no MACs column
    assert out[2].split()[:4] == ["resnet20", "resnet-cifar", "269.72K", "3x32x32"]
    assert "resnets models --macs" in out[-1]  # where the multiply-adds went
    assert main(["models", "resnet20", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["params"] == 269_722 and row["macs"] is None


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resnet50", "--json", "--macs"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {"resnet50", "resnet50d", "se_resnet50", "wide_resnet50_2"} <= set(rows)  # a word matches as a substring
    row = rows["resnet50"]
    assert row["params"] == 25_557_032 and round(row["macs"] / 1e9, 2) == 4.09
    assert list(row) == ["name", "family", "params", "macs", "input_size", "num_classes", "description"]


def test_counts_are_read_back_from_the_cache_until_the_code_changes(
    monkeypatch: pytest.MonkeyPatch, _private_cache: Path
) -> None:
    first = profile.registry_counts(["resnet20", "resnet32"], macs=True)
    assert first["resnet20"] == profile.ModelCounts(269_722, 40_551_040, units=9)
    assert json.loads((_private_cache / "model-counts.json").read_text())["models"]["resnet32"]["params"] == 464_154
    monkeypatch.setattr(profile, "build_meta", _refuse)  # nothing is built a second time
    assert profile.registry_counts(["resnet20", "resnet32"], macs=True) == first
    assert profile.registry_counts(["resnet20"])["resnet20"] == profile.ModelCounts(269_722, None, units=9)
    monkeypatch.setattr(profile, "_code_key", lambda: "other sources")  # an edited block: count again
    with pytest.raises(AssertionError, match="must not be"):
        profile.registry_counts(["resnet20"])


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20", "--in-channels", "1", "--input-size", "1", "28", "28"]) == 0
    out = capsys.readouterr().out
    assert "(64, 7, 7)" in out and "stage 3 (3 units)" in out


def _stage_rows(out: str) -> list[tuple[list[str], list[str]]]:
    """(shapes, numbers) of each stage row of a printed summary."""
    rows = [l.split(")", 1)[1] for l in out.splitlines() if l.startswith("stage ")]  # drop "stage 1 (3 units)"
    return [(re.findall(r"\([\d, ]+\)", r), re.sub(r"\([\d, ]+\)", "", r).split()) for r in rows]


def test_summary_at_another_image_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20", "--input-size", "3", "64", "64"]) == 0
    stage3 = _stage_rows(capsys.readouterr().out)[2]
    assert stage3 == (["(32, 32, 32)", "(64, 16, 16)"], ["203,520", "51,904,512"])  # 4x the MACs at 32x32


def test_summary_of_a_densenet_shows_its_blocks_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "densenet_bc_100_12"]) == 0
    shapes = [shapes for shapes, _ in _stage_rows(capsys.readouterr().out)]
    assert shapes == [
        ["(24, 32, 32)", "(216, 32, 32)"],
        ["(108, 16, 16)", "(300, 16, 16)"],
        ["(150, 8, 8)", "(342, 8, 8)"],
    ]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["resnet20", "--input-size", "1", "28", "28"],
            (
                "has 1 channel, but resnet20 is built for 3 (it takes "
                "(batch, 3, height, width)); add --in-channels 1 to build it for 1 channel"
            ),
        ),
        (
            ["resnet20", "--input-size", "3", "28"],
            (
                "has 2 numbers, but resnet20 takes (batch, 3, height, width): "
                "give the 3 sizes after the batch, e.g. --input-size 3 32 32"
            ),
        ),
        (["densenet121", "--input-size", "3", "28", "28"], "DenseNet needs images of at least 29x29 pixels"),
        (["highway_fc_10", "--input-size", "3", "32", "32"], "highway_fc_10 takes (batch, 784)"),
        (["resnet20", "--input-size", "3", "0", "32"], "every size must be at least 1"),
        (["resnet20", "--in-channels", "0"], "--in-channels must be at least 1, got 0"),
        (["nonexistent"], "unknown model 'nonexistent'"),
    ],
)
def test_summary_of_what_does_not_fit_is_one_line(argv: list[str], says: str, capsys) -> None:
    assert main(["summary", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err


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
        assert rows[name]["macs"] is None  # counted only with --macs
        assert main(["models", name, "--json", "--macs"]) == 0
        counted = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
        assert counted[name]["macs"] > 0
    assert rows["densenet_bc_100_12"]["params"] == 769_162


def _family_section(doc: str, header: str) -> str:
    """The lines of ``help(create_model)`` under one family header, up to the next blank line."""
    start = doc.index(f"\n{header} (")
    return doc[start : doc.find("\n\n", start + 1)]


def test_help_of_create_model_lists_each_familys_options_from_its_config() -> None:
    doc = resnets.create_model.__doc__ or ""
    defaults = {f.name: f.default for f in dataclasses.fields(ResNetConfig)}
    cifar = _family_section(doc, "resnet-cifar: ResNetConfig")
    assert f"    shortcut: str = {defaults['shortcut']!r}  (models use 'A', 'B', 'none')" in cifar  # resnet20: A
    assert f"    drop_path_rate: float = {defaults['drop_path_rate']!r}\n" in cifar
    densenet = _family_section(doc, "densenet: DenseNetConfig")
    growth = next(f for f in dataclasses.fields(DenseNetConfig) if f.name == "growth_rate").default
    assert f"    growth_rate: int = {growth}  (models use 12, 32, 40)" in densenet
    resmlp = _family_section(doc, "resmlp: ResMLPConfig")
    skip = next(f for f in dataclasses.fields(ResMLPConfig) if f.name == "skip_kind").default
    assert f"    skip_kind: str = {skip!r}" in resmlp
    families = {resnets.get_model_entry(n).family for n in resnets.list_models()}
    assert all(f"\n{family}: " in doc for family in families)
