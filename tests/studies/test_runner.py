"""The one runner: it measures once, writes NAME.json, judges and renders from what the JSON holds, and
re-renders the same files from the JSON alone; the report rebuilt from the JSON equals the one written live."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.errors import ConfigError
from resnets.studies import Context, rerender, run_study
from resnets.studies.contract import InstrumentOptions
from resnets.studies.figures import new_figure, save_figure
from resnets.studies.verdict import Check, Threshold, Verdict, judged

THRESHOLD = Threshold(2.0, above=True, unit="points", paper="about 3 points", source="Someone 2016, Table 1")


@dataclasses.dataclass(frozen=True)
class FakeOptions(InstrumentOptions):
    seeds: int = dataclasses.field(default=2, metadata={"help": "repetitions"})


def _fake(seen: list) -> types.SimpleNamespace:
    """An instrument whose numbers hold a NaN, an infinity, a tuple and integer keys, as real ones do."""

    def measure(options: FakeOptions, context: Context) -> dict:
        return {
            "settings": {"bn": "none"},
            "gap": tuple(1.5 + s for s in range(options.seeds)),  # 1.5, 2.5: straddles the threshold of 2
            "missing": math.nan,
            "huge": math.inf,
            "by_depth": {20: 1.0},
        }

    def judge(numbers: dict) -> Verdict:
        seen.append(numbers)
        return judged([Check("gap", "the gap", tuple(numbers["gap"]), THRESHOLD)], found="one gap measured")

    def render(numbers: dict, out: Path) -> tuple[str, list[Path]]:
        figure, ax = new_figure()
        ax.plot(numbers["gap"], marker="o")
        ax.set_title(f"gap over seeds, depth keys {sorted(numbers['by_depth'])}")
        return "| gap |\n|---|\n" + "".join(f"| {g} |\n" for g in numbers["gap"]), [
            save_figure(figure, out, "fake-gap")
        ]

    return types.SimpleNamespace(
        NAME="fake", CLAIM="A gap above 2 points (Someone 2016).", THRESHOLDS={"gap": THRESHOLD},
        Options=FakeOptions, measure=measure, judge=judge, render=render,
    )  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list:
    from resnets import studies

    seen: list = []
    instrument = _fake(seen)
    monkeypatch.setattr(studies, "STUDIES", {"fake": "a fake instrument"})
    monkeypatch.setattr(studies, "get_study", lambda name: instrument)
    return seen


def test_the_runner_writes_the_files_and_rerenders_the_same_bytes_from_the_json(fake: list, tmp_path: Path) -> None:
    saved = run_study("fake", seeds=2, out=str(tmp_path), quiet=True)
    assert saved.verdict.status == "undecided"  # seeds 1.5 and 2.5 straddle 2
    # what the live run judged is what the JSON holds: NaN and infinity as null, tuples as lists, keys as text
    assert fake[0]["missing"] is None and fake[0]["huge"] is None
    assert fake[0]["gap"] == [1.5, 2.5] and fake[0]["by_depth"] == {"20": 1.0}
    data = json.loads(saved.json.read_text())
    assert data["checks"] == [
        {
            "name": "gap",
            "what": "the gap",
            "status": "undecided",
            "values": [1.5, 2.5],
            "mean": 2.0,
            "interval": [1.5, 2.5],
            "threshold": dataclasses.asdict(THRESHOLD),
        }
    ]
    assert data["thresholds"]["gap"]["source"] == "Someone 2016, Table 1"
    assert data["settings"] == {
        "seeds": 2,
        "data": None,
        "budget": "cpu",
        "device": "cpu",
        "precision": "fp32",
        "bn": "none",
    }
    assert data["verdict"].startswith("Undecided: one gap measured; the gap: 2 points (seeds 1.5 to 2.5), against")
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(files) == {"fake.json", "fake.md", "fake-gap.png"}
    again = rerender(saved.json)
    assert again.verdict == saved.verdict and len(fake) == 2 and fake[1] == fake[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # the same files, byte for byte


def test_run_study_refuses_a_setting_the_study_does_not_have(fake: list, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study 'fake' has no setting 'grid'; its settings are budget, data"):
        run_study("fake", grid=3, out=str(tmp_path))


def test_rerender_refuses_a_json_it_cannot_rejudge(tmp_path: Path) -> None:
    path = tmp_path / "lesion.json"
    path.write_text(json.dumps({"name": "lesion", "claim": "c", "verdict": "v", "supported": True}))
    with pytest.raises(ConfigError, match="not a study of format 2"):
        rerender(path)
    path.write_text(json.dumps({"format": 2, "name": "lesion", "numbers": {"models": {}}}))
    with pytest.raises(ConfigError, match="its numbers do not fit the lesion instrument"):
        rerender(path)


@pytest.mark.parametrize("out", ["checkpoints", "linked/new"])
def test_a_study_out_in_a_runs_own_folder_or_through_a_link_in_a_run_is_refused_and_makes_nothing(
    fake: list, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    from resnets import studies
    from resnets.io.guard import WriteRefused

    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")
    outside.mkdir()
    (run / "linked").symlink_to(outside, target_is_directory=True)
    before = sorted(map(str, tmp_path.rglob("*")))
    instrument, measured = studies.get_study("fake"), []
    monkeypatch.setattr(instrument, "measure", lambda *args, real=instrument.measure: measured.append(1) or real(*args))
    capsys.readouterr()
    assert main(["study", "fake", "--out", str(run / out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert ("symlink inside the run directory" if out.startswith("linked") else "only its training writes") in line
    assert measured == [] and fake == []  # refused before any work
    with pytest.raises(WriteRefused):
        run_study("fake", out=str(run / out), quiet=True)  # the runner itself makes no folder through the link
    assert sorted(map(str, tmp_path.rglob("*"))) == before and list(outside.iterdir()) == []


def _without_date(text: str) -> str:
    return re.sub(r"Made by .* from ", "Made by ... from ", text)


@pytest.mark.slow
def test_the_report_rebuilt_from_json_alone_equals_the_one_written_live(bars: Path, tmp_path: Path) -> None:
    out = tmp_path / "studies"
    common = ["--data", str(bars), "--seeds", "2", "--samples", "8", "--quiet", "--out", str(out)]
    assert main(["study", "signal", "--depths", "8,14", *common]) == 0
    assert main(["study", "shattered", "--depths", "2,8", *common]) == 0
    assert main(["report", str(out)]) == 0
    live = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"signal.json", "signal.md", "shattered.json", "report.html", "report.md"} <= set(live)
    for path in out.iterdir():
        if path.is_file() and path.suffix != ".json":
            path.unlink()  # only the JSON is left
    assert main(["report", str(out)]) == 0
    rebuilt = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert set(rebuilt) == set(live)
    for name, before in live.items():
        if name.startswith("report."):
            assert _without_date(rebuilt[name].decode()) == _without_date(before.decode()), name
        else:
            assert rebuilt[name] == before, name
