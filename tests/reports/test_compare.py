"""``resnets compare``: the table's figures are the runs' own, the settings column names exactly what differs,
unfinished runs show their metrics so far, and a folder that is not a run is one error line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from resnets.cli import main
from resnets.reports.compare import (
    Comparison,
    compare_figure,
    compare_runs,
    differing_settings,
    differs_line,
    markdown_table,
    read_run,
    write_comparison,
)
from resnets.runs import RunDir
from resnets.runs.lock import RunLock
from resnets.train import train
from resnets.train.progress import format_duration
from tests.train.conftest import TINY, tiny_bundle, tiny_config

SWEEP = {"lr-a": (0.05, 7, 0), "lr-b": (0.1, 7, 0), "seed-b": (0.1, 8, 16)}  # name: (lr, seed, validation samples)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny real runs in one folder: two learning rates, and a second seed (with a validation split)."""
    root = tmp_path_factory.mktemp("sweep")
    for name, (lr, seed, val) in SWEEP.items():
        config = replace(tiny_config(root / name, lr=lr, epochs=2), seed=seed)
        train(config, data=tiny_bundle(n_train=64, n_test=16, val=val))
    return root


@pytest.fixture
def runs(sweep: Path, tmp_path: Path) -> Path:
    """A copy of the sweep that a test may change."""
    return Path(shutil.copytree(sweep, tmp_path / "sweep"))


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _table_rows(table: str) -> dict[str, dict[str, str]]:
    """The Markdown table as {run: {heading: cell}}."""
    lines = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table.splitlines()]
    heading, body = lines[0], lines[2:]
    return {row[0]: dict(zip(heading, row)) for row in body}


def test_the_table_shows_each_runs_summary(sweep):
    comparison = compare_runs([sweep / name for name in SWEEP], sort="given")
    assert [run.run for run in comparison.runs] == list(SWEEP)
    table = _table_rows(markdown_table(comparison))
    for name in SWEEP:
        saved, cells = _summary(sweep / name), table[name]
        assert cells["status"] == "done" and cells["model"] == TINY and cells["data"] == "tiny"
        assert cells["params"] == f"{saved['params']:,}" == "1,262"
        assert cells["epochs"] == "2" and cells["steps"] == "8" == str(saved["steps"])
        assert cells["train err (%)"] == f"{saved['train_error']:.2f}"
        assert cells["test err (%)"] == f"{saved['test_error']:.2f}"
        assert cells["wall time"] == format_duration(saved["wall_time_s"])
        assert cells["images/s"] == f"{saved['images_per_s']:,.0f}"
    assert table["seed-b"]["best val err (%)"] == f"{_summary(sweep / 'seed-b')['best']['val_error']:.2f}"
    assert table["lr-a"]["best val err (%)"] == "-"  # no validation split, so no selected epoch


def test_the_settings_column_names_exactly_the_keys_that_differ(sweep):
    comparison = compare_runs([sweep], sort="given")  # a folder stands for the runs in it, in name order
    assert comparison.differs == {"seed": [7, 7, 8], "lr": [0.05, 0.1, 0.1]}
    assert [run.settings for run in comparison.runs] == [
        {"seed": 7, "lr": 0.05},
        {"seed": 7, "lr": 0.1},
        {"seed": 8, "lr": 0.1},
    ]
    assert differs_line(comparison) == "settings that differ: seed: 7 / 7 / 8; lr: 0.05 / 0.1 / 0.1"
    assert _table_rows(markdown_table(comparison))["lr-a"]["settings"] == "seed=7, lr=0.05"


def test_differing_settings_counts_a_missing_key_as_a_difference():
    configs = [{"a": 1, "b": [30, 60]}, {"a": 1, "b": [30, 60], "c": 0.5}, {"a": 1, "b": [30, 90]}]
    assert differing_settings(configs) == {"b": [[30, 60], [30, 60], [30, 90]], "c": [None, 0.5, None]}
    assert differing_settings(configs[:1] * 3) == {}


def test_sorting_by_test_error_and_by_name(sweep):
    errors = {name: _summary(sweep / name)["test_error"] for name in SWEEP}
    by_test = [run.run for run in compare_runs([sweep], sort="test").runs]
    assert by_test == sorted(SWEEP, key=lambda name: errors[name])
    given = ["seed-b", "lr-a", "lr-b"]
    assert [run.run for run in compare_runs([sweep / n for n in given], sort="given").runs] == given
    assert [run.run for run in compare_runs([sweep / n for n in given], sort="name").runs] == sorted(given)


def test_out_writes_markdown_json_with_one_entry_per_run_and_a_figure(sweep, tmp_path):
    comparison = compare_runs([sweep], sort="given")
    paths = write_comparison(comparison, tmp_path / "cmp")
    assert [p.name for p in paths] == ["compare.md", "compare.json", "compare.png"]
    saved = json.loads(paths[1].read_text())
    assert [entry["run"] for entry in saved["runs"]] == list(SWEEP)
    for entry in saved["runs"]:
        summary = _summary(sweep / entry["run"])
        for key in ("params", "epochs", "steps", "train_error", "test_error", "wall_time_s", "images_per_s"):
            assert entry[key] == summary[key], key
        assert entry["status"] == "done" and entry["path"] == str(sweep / entry["run"])
    assert saved["runs"][2]["best_val_error"] == _summary(sweep / "seed-b")["best"]["val_error"]
    assert saved["differs"] == {"seed": [7, 7, 8], "lr": [0.05, 0.1, 0.1]}
    markdown = paths[0].read_text()
    assert markdown_table(comparison) in markdown and "lr: 0.05 / 0.1 / 0.1" in markdown
    with Image.open(paths[2]) as image:
        assert image.format == "PNG" and image.size == (864, 768)


def test_the_figure_has_one_line_per_run_in_each_panel(sweep):
    comparison = compare_runs([sweep], sort="given")
    errors, losses = compare_figure(comparison).axes
    assert len(errors.get_lines()) == 3 and len(losses.get_lines()) == 3
    labels = [line.get_label() for line in errors.get_lines()]
    assert labels == ["lr-a (seed=7, lr=0.05)", "lr-b (seed=7, lr=0.1)", "seed-b (seed=8, lr=0.1)"]
    assert len({to_rgba(line.get_color()) for line in errors.get_lines()}) == 3
    for run, line in zip(comparison.runs, errors.get_lines()):
        rows = RunDir(run.path).read_metrics()
        assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [r["test_error"] for r in rows]
    # The loss is the smoothed per-step loss on the epoch axis (8 steps, 4 per epoch).
    assert list(losses.get_lines()[0].get_xdata()) == [s / 4 for s in range(1, 9)]


def test_an_unfinished_run_shows_its_metrics_so_far(runs):
    run = runs / "seed-b"
    (run / "summary.json").unlink()
    rows = RunDir(run).read_metrics()
    with RunLock.acquire(run):  # a run's files are written by the holder of its lock (resnets.io.guard)
        RunDir(run).write_metrics(rows[:1])  # stopped after the first epoch's evaluation
    entry = read_run(run)
    assert entry.status == "stopped"  # no summary, and no live process holds it
    assert entry.epochs == 1 and entry.steps == 8  # steps.csv is written with each checkpoint, ahead of the rows
    assert entry.test_error == rows[0]["test_error"] and entry.train_error == rows[0]["train_error"]
    assert entry.best_val_error == rows[0]["val_error"] and entry.wall_time_s == rows[0]["wall_time_s"]
    assert entry.params == 1262  # counted on the meta device, since no summary says it
    with RunLock.acquire(run):
        assert read_run(run).status == "running"
        table = _table_rows(markdown_table(compare_runs([runs], sort="given")))
        assert table["seed-b"]["status"] == "running" and table["seed-b"]["epochs"] == "1"


def test_a_summary_older_than_the_metrics_is_not_used(runs):
    """A resumed run that stopped again: its summary is from the first session, its metrics are newer."""
    run = runs / "lr-a"
    summary = _summary(run)
    (run / "summary.json").write_text(json.dumps({**summary, "steps": 4, "test_error": 99.0}))
    entry = read_run(run)
    assert entry.status == "stopped" and entry.steps == 8
    assert entry.test_error == RunDir(run).read_metrics()[-1]["test_error"] != 99.0


def test_cli_prints_the_table_and_writes_out(runs, tmp_path, capsys):
    assert main(["compare", str(runs), "--sort", "given", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert _table_rows(out.split("\n\n")[0]).keys() == set(SWEEP)
    assert "settings that differ: seed: 7 / 7 / 8; lr: 0.05 / 0.1 / 0.1" in out
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.json", "compare.md", "compare.png"]


def test_cli_refuses_a_folder_that_is_not_a_run_with_one_line(runs, tmp_path, capsys):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.png").write_bytes(b"")
    assert main(["compare", str(runs / "lr-a"), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("resnets compare: error: ")
    assert f"{str(other)!r} is not a run directory and holds none" in err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_damaged_run_inside_a_folder_is_skipped_and_named(runs, capsys):
    (runs / "lr-b" / "config.json").write_text("{not json")
    assert main(["compare", str(runs), "--sort", "name"]) == 0
    captured = capsys.readouterr()
    assert list(_table_rows(captured.out.split("\n\n")[0])) == ["lr-a", "seed-b"]
    assert captured.err.startswith(f"resnets compare: skipped {runs / 'lr-b'}: ") and "not valid JSON" in captured.err
    assert main(["compare", str(runs / "lr-b")]) == 2  # named directly, it must be readable


def test_runs_of_one_name_in_two_folders_are_told_apart(sweep, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(sweep / "lr-a", tmp_path / parent / "run")
    comparison = compare_runs([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "a" / "run"])
    assert sorted(run.run for run in comparison.runs) == ["a/run", "b/run"]  # the repeat is shown once
    assert comparison.differs == {}
    assert differs_line(comparison) == "settings that differ: none (the runs share every setting)"


def test_names_from_folders_and_records_are_printed_escaped(runs, capsys):
    (runs / "lr-a").rename(runs / "lr-a\x1b[2J")
    (runs / "lr-b").rename(runs / "bad\nname")
    (runs / "bad\nname" / "config.json").write_text("{not json")
    assert main(["compare", str(runs), "--sort", "name"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out and "| lr-a\\x1b[2J " in captured.out
    (err,) = captured.err.strip().splitlines()  # one line: the folder's newline is shown as \x0a
    assert err.startswith("resnets compare: skipped ") and "bad\\x0aname" in err
    comparison = Comparison(runs=[], differs={"note\x1b[2J": ["a\nb", {"k\x07": "v"}]})
    assert differs_line(comparison) == "settings that differ: note\\x1b[2J: a\\x0ab / {k\\x07=v}"
