"""The instruments' default runs and the study job: lengths against the recipe's schedule, depths against a
count of the weighted layers, compute against a hand formula, and the ETA against a clock stepped by hand."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets.models import create_model
from resnets.models.profile import build_meta, count_macs
from resnets.runs.record import RECORD_FILE
from resnets.studies import STUDIES, Context
from resnets.studies.job import JOB_RECORD, Job, Piece, plan, run_flops, running, write_job_record
from resnets.studies.plans import (
    CPU_STEPS,
    DEFAULT_RUNS,
    NOT_AT_CONVERGENCE,
    STUDY_RECIPE,
    TWIN_OPTIONS,
    RunSpec,
    at_depth,
    default_runs,
    reference_specs,
)
from resnets.train.recipes import get_recipe

FASHION_MNIST_TRAIN = 60000


def test_cpu_runs_are_the_study_recipes_whole_schedule() -> None:
    recipe = get_recipe(STUDY_RECIPE)
    assert CPU_STEPS == recipe.epochs * (FASHION_MNIST_TRAIN // recipe.batch_size)  # full batches only (drop_last)
    for name, budgets in DEFAULT_RUNS.items():
        if name in NOT_AT_CONVERGENCE:
            continue
        for group in budgets["cpu"]:
            assert group.recipe == STUDY_RECIPE and group.steps == CPU_STEPS, name


def weighted_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("depth", [20, 56])
def test_speedrun_twins_at_a_depth_have_that_many_weighted_layers(depth: int) -> None:
    for name in ("speedrun", "speedrun_plain"):
        model, options, label = at_depth(name, depth, TWIN_OPTIONS, "w16")
        built = create_model(model, **options)
        assert weighted_layers(built) == depth and label == f"{name}-w16-d{depth}"
        if name == "speedrun":  # the whitening conv, three stage entries and the classifier are not units
            assert len(built.residual_blocks()) == depth - 5


def test_a_registered_depth_keeps_its_name_so_runs_are_shared() -> None:
    assert at_depth("resnet20", 56) == ("resnet56", {}, "resnet56")
    model, options, label = at_depth("resnet20", 26)
    assert (model, options, label) == ("resnet20", {"layers": (4, 4, 4)}, "resnet20-d26")


def test_groups_expand_by_seed_then_depth_then_model() -> None:
    (degradation,) = default_runs("degradation", "cpu")
    specs = degradation.specs()
    assert [(s.seed, s.label) for s in specs] == [
        (seed, f"{model}-w16-d{depth}")
        for seed in (0, 1)
        for depth in (20, 56)
        for model in ("speedrun_plain", "speedrun")
    ]
    assert default_runs("gates", "paper") == default_runs("gates", "cpu")  # no paper group: the cpu one


def test_run_flops_by_hand() -> None:
    recipe = get_recipe(STUDY_RECIPE)
    spec = RunSpec("resnet20", "resnet20", 500)  # 500 x 256 = 128,000 images: 2.13 epochs, so one evaluation
    macs = count_macs(build_meta("resnet20", num_classes=10, in_channels=1), (1, 28, 28))
    expected = 6 * macs * 500 * recipe.batch_size + 2 * macs * 10000
    assert run_flops(spec, "fashion-mnist") == pytest.approx(expected, rel=1e-12)
    longer = RunSpec("resnet20", "resnet20", 1000)  # 4.27 epochs at eval_every 4: still one evaluation
    assert run_flops(longer, "fashion-mnist") == pytest.approx(6 * macs * 1000 * 256 + 2 * macs * 10000, rel=1e-12)
    twice = RunSpec("resnet20", "resnet20", 1000, changes={"eval_every": 2})
    assert run_flops(twice, "fashion-mnist") == pytest.approx(6 * macs * 1000 * 256 + 2 * 2 * macs * 10000, rel=1e-12)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_work_left_over_the_rate_of_the_work_done() -> None:
    clock, said = Clock(), io.StringIO()
    job = Job([Piece("a", "training a", 100.0), Piece("b", "training b", 300.0)], rate=10.0, clock=clock, quiet=False)
    job.stream = said
    assert job.eta() == pytest.approx(40.0)  # 400 FLOPs at the assumed 10 FLOP/s
    job.training("a", "training a")
    clock.now = 5.0
    job.trained("a", 150.0)  # the run counted 150: done work is what it counted
    assert job.done_flops == 150.0 and job.total_flops == 450.0
    assert job.eta() == pytest.approx(300.0 / (150.0 / 5.0))
    assert "0.000 of 0.000 PFLOP done" in said.getvalue().splitlines()[0]


def test_a_run_trained_inside_a_measuring_pauses_the_measurings_clock() -> None:
    clock = Clock()
    job = Job([Piece("measure:x", "measuring x", 0.0), Piece("r", "training r", 50.0)], clock=clock)
    job.measuring("x")
    clock.now = 2.0
    job.training("r", "training r")
    clock.now = 12.0
    job.trained("r", 50.0)
    clock.now = 15.0
    job.measured("x")
    seconds = {p.key: p.seconds for p in job.pieces}
    assert seconds == {"measure:x": 5.0, "r": 10.0}
    totals = job.totals()
    assert totals["trained_runs"] == 1 and totals["training_pflop"] == 50.0 / 1e15


def test_the_plan_lists_a_shared_run_once_and_skips_finished_ones(tmp_path: Path) -> None:
    context = Context(out=str(tmp_path))
    names = ["gradients", "landscape"]  # both measure the 56-layer twins
    from resnets.studies import get_study

    options = {name: get_study(name).Options() for name in names}
    pieces = plan(names, options, context)
    runs = [p for p in pieces if not p.key.startswith("measure:")]
    assert len(runs) == 2 and {p.what.split()[1] for p in runs} == {"speedrun_plain-w16-d56", "speedrun-w16-d56"}
    finished = Path(runs[0].key)
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text("{}")
    (finished / RECORD_FILE).write_text("{}")
    assert len([p for p in plan(names, options, context) if not p.key.startswith("measure:")]) == 1
    assert set(STUDIES) >= set(names)


def test_the_job_record_says_what_the_job_did(tmp_path: Path) -> None:
    clock = Clock()
    job = Job([Piece("r", "training r", 2e14)], title="study all", clock=clock)
    with running(job):
        job.training("r", "training r")
        clock.now = 90.0
        job.trained("r", 2.5e14)
    context = Context(out=str(tmp_path))
    record = write_job_record(job, context, "resnets study all")
    saved = json.loads((tmp_path / JOB_RECORD).read_text())
    assert saved["training_pflop"] == pytest.approx(0.25) and saved["wall_time_s"] == 90.0
    assert (
        record["line"].startswith("study all: 1m30s wall on ")
        and "0.250 PFLOP counted in 1 training runs" in record["line"]
    )
    assert saved["environment"]["torch_threads"] == torch.get_num_threads()


def test_a_reference_holds_for_its_net_and_recipe_at_any_length_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from resnets.studies import plans

    reference = plans.Reference(8.0, 2 * CPU_STEPS, "the recipe at twice the length")
    monkeypatch.setattr(plans, "REFERENCES", {("speedrun-w16-d20", STUDY_RECIPE, "fashion-mnist"): reference})
    model, options, _ = at_depth("speedrun", 20, TWIN_OPTIONS, "w16")
    recipe = dataclasses.asdict(get_recipe(STUDY_RECIPE))
    longer = {**recipe, "epochs": 8}
    assert plans.find_reference(model, json.loads(json.dumps(options)), longer, "fashion-mnist") == (
        "speedrun-w16-d20",
        reference,
    )
    assert plans.find_reference(model, options, {**recipe, "lr": 0.1}, "fashion-mnist") is None  # another recipe
    assert plans.find_reference(model, options, recipe, "cifar10") is None  # another data set
    assert plans.find_reference(model, {**options, "widths": [32, 64, 128]}, recipe, "fashion-mnist") is None


def test_the_reference_runs_are_each_trained_net_once_at_twice_its_length() -> None:
    specs = reference_specs()
    assert [spec.label for spec in specs] == [
        "speedrun_plain-w16-d56",
        "speedrun-w16-d56",
        "speedrun_plain-w16-d20",
        "speedrun-w16-d20",
        "highway_fc_20",
    ]  # every net a claim about trained nets measures on the cpu budget; the scaling runs are not at convergence
    assert {(spec.steps, spec.seed, spec.recipe) for spec in specs} == {(2 * CPU_STEPS, 0, STUDY_RECIPE)}
    assert {spec.label for spec in reference_specs(factor=3) if spec.steps == 3 * CPU_STEPS} == {s.label for s in specs}
