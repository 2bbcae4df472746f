"""The degradation study: twins that differ only in the shortcut, its curves and final errors, and its verdict."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.runs import open_run
from resnets.studies import Context, degradation
from resnets.studies.plans import RunSpec, at_depth, default_runs
from resnets.studies.trained import open_trained, train_run


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_and_residual_twins_differ_only_in_the_shortcut(depth: int) -> None:
    plain, residual = degradation.twins(("resnet20", "plain20"))
    assert (plain, residual) == ("plain20", "resnet20")
    (pm, po, _), (rm, ro, _) = at_depth(plain, depth), at_depth(residual, depth)
    a = dataclasses.asdict(create_model(pm, **po).config)
    b = dataclasses.asdict(create_model(rm, **ro).config)
    assert {k for k in a if a[k] != b[k]} == {"shortcut"} and (a["shortcut"], b["shortcut"]) == ("none", "A")
    assert a["layers"] == ((depth - 2) // 6,) * 3
    # registered depths name their registered model, so their runs are the ones other instruments train
    assert pm == f"plain{depth}" and po == {} and rm == f"resnet{depth}"


def test_a_depth_without_a_registered_model_is_built_with_options() -> None:
    assert at_depth("resnet20", 8) == ("resnet20", {"layers": (1, 1, 1)}, "resnet20-d8")
    with pytest.raises(ConfigError, match="6n\\+2"):
        at_depth("resnet20", 21)


def test_the_twins_must_be_one_plain_and_one_residual_model() -> None:
    assert degradation.twins(("resnet20", "plain20")) == ("plain20", "resnet20")
    with pytest.raises(ConfigError, match="one plain model"):
        degradation.twins(("resnet20", "resnet32"))
    with pytest.raises(ConfigError, match="two twins"):
        degradation.twins(("plain20",))


def test_smoothing_and_the_final_training_error_match_a_hand_computation() -> None:
    assert degradation.smoothed([4.0, 2.0, 6.0, 0.0], 2) == [4.0, 3.0, 4.0, 3.0]
    errors = [50.0] * 18 + [10.0, 20.0]  # the last 10% of 20 steps: two steps
    assert degradation.final_train_error(errors) == 15.0


def test_the_comparison_separates_seeds_and_reads_the_trend() -> None:
    worse = degradation.compare({20: [10.0, 11.0], 32: [12.0, 12.5], 56: [14.0, 15.0]})
    assert worse["separated_higher"] and worse["monotone_higher"] and not worse["separated_lower"]
    assert worse["difference"] == pytest.approx(14.5 - 10.5)
    overlapping = degradation.compare({20: [10.0, 13.0], 56: [12.0, 14.0]})
    assert not overlapping["separated_higher"] and not overlapping["separated_lower"]
    better = degradation.compare({20: [10.0, 11.0], 56: [8.0, 9.5]})
    assert better["separated_lower"] and better["difference"] == pytest.approx(-1.75)


def test_runs_that_differ_in_more_than_the_shortcut_are_refused(batch_bars: Path, tmp_path: Path) -> None:
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    one = {"layers": (1, 1, 1)}
    plain = train_run(context, RunSpec("plain20", "p", 1, snapshots=0, model_options=one))
    residual = train_run(context, RunSpec("resnet20", "r", 1, snapshots=0, model_options=one))
    degradation.check_twins(open_run(plain), open_run(residual))  # twins: accepted
    other = train_run(context, RunSpec("resnet20", "r", 1, seed=1, snapshots=0, model_options=one))
    with pytest.raises(ConfigError, match="not twins: they differ in seed"):
        degradation.check_twins(open_run(plain), open_run(other))
    wide = train_run(context, RunSpec("resnet20", "w", 1, snapshots=0, model_options={**one, "widths": (16, 32, 32)}))
    with pytest.raises(ConfigError, match="differ in widths"):
        degradation.check_twins(open_run(plain), open_run(wide))


def test_runs_with_per_epoch_rows_take_their_test_curve_from_them(batch_bars: Path, tmp_path: Path) -> None:
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    one_batch = {"batch_size": 256}  # the bars' 258 training images: one batch an epoch
    spec = RunSpec(
        "resnet20", "r", 4, recipe="default", snapshots=0, model_options={"layers": (1, 1, 1)}, changes=one_batch
    )
    path = train_run(context, spec)  # the default recipe evaluates every epoch
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # one batch per epoch
    measured = degradation.measure_run(open_trained(context, path, "r"), curve=[])
    assert measured["test_curve"] == {"step": [r["step"] for r in rows], "error": [r["test_error"] for r in rows]}


def test_cli_trains_every_twin_and_reports_their_own_numbers(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "degradation", "--data", str(batch_bars), "--depths", "8,14", "--steps", "3", "--samples", "24"]
    argv += ["--model", "plain20", "--model", "resnet20"]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "degradation.json").read_text())
    assert saved["settings"]["seeds"] == 2 and saved["settings"]["depths"] == [8, 14]
    for family, prefix in (("plain", "plain20"), ("residual", "resnet20")):
        for depth in ("8", "14"):
            runs = saved["numbers"]["runs"][family][depth]
            assert len(runs) == 2 and Path(runs[0]["run"]).name.startswith(f"{prefix}-d{depth}-")
            for m in runs:
                summary = json.loads((Path(m["run"]) / "summary.json").read_text())
                with open(Path(m["run"]) / "steps.csv") as handle:
                    errors = [float(row["error"]) for row in csv.DictReader(handle)]
                assert len(errors) == 3 and m["final_train_error"] == pytest.approx(errors[-1])  # last 10%: 1 step
                assert (
                    m["final_test_error"] == summary["test_error"]
                    and m["test_curve"]["error"][-1] == summary["test_error"]
                )
                assert m["test_curve"]["step"] == [0, 1, 2, 3, 3]  # the 4 snapshots, then the whole test split
            finals = saved["numbers"]["final"][family][depth]["train_error"]
            assert finals["n"] == 2 and finals["mean"] == pytest.approx(sum(m["final_train_error"] for m in runs) / 2)
    checks = {c["name"]: c for c in saved["checks"]}
    for name, family, side in (("plain_degrades", "plain", 1), ("residual_no_worse", "residual", -1)):
        runs = saved["numbers"]["runs"][family]
        gaps = [b["final_train_error"] - a["final_train_error"] for a, b in zip(runs["8"], runs["14"])]
        assert checks[name]["values"] == pytest.approx(gaps)  # per training seed, paired by seed
        line = checks[name]["threshold"]["value"]
        held = [side * (gap - line) > 0 for gap in gaps]
        assert checks[name]["status"] == (
            "supported" if all(held) else "not supported" if not any(held) else "undecided"
        )
    assert saved["status"] in ("supported", "not supported", "undecided")
    assert set(saved["settling"]) == {"plain20", "resnet20"} and len(saved["settling"]["plain20"]["steps"]) == 3
    assert "ResNet-14" in saved["table"] and (tmp_path / "degradation-curves.png").read_bytes()[:4] == b"\x89PNG"


def _stand_in(name: str, options: dict) -> SimpleNamespace:
    """What check_twins reads of a run: its model's config and its record (the same training for both)."""
    record = SimpleNamespace(model=name, to_dict=lambda: {"model": name, "model_options": options, "train": {}})
    return SimpleNamespace(model=create_model(name, **options), record=record)


def test_the_default_speedrun_twins_differ_in_the_residual_switch_alone() -> None:
    (group,) = default_runs("degradation", "cpu")
    plain_spec, residual_spec = group.specs(seeds=1)[2:]  # the 56-layer twins
    plain, residual = (_stand_in(s.model, dict(s.model_options)) for s in (plain_spec, residual_spec))
    assert (plain.model.config.residual, residual.model.config.residual) == (False, True)
    degradation.check_twins(plain, residual)  # accepted
    wider = _stand_in(residual_spec.model, {**residual_spec.model_options, "widths": (32, 64, 128)})
    with pytest.raises(ConfigError, match="differ in widths"):
        degradation.check_twins(plain, wider)
