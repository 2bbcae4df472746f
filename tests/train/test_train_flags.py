"""``resnets train`` flags generated from the Recipe dataclass, the recipe's values in --help, and the schedule
once called "onecycle" (now "linear"), which old files and run records still name."""

from __future__ import annotations

import dataclasses
import json
import re
import typing

import pytest
import yaml

from resnets.cli import build_parser, main
from resnets.cli.train import CHOICES, NOT_FLAGS, new_run_config, sourced_overrides
from resnets.errors import ConfigError
from resnets.train import TrainConfig, resume_config, train
from resnets.train.recipes import MAIN_RECIPE, Recipe, get_recipe

from .conftest import tiny_config


def _config(*argv: str) -> TrainConfig:
    """What ``resnets train ARGV`` would train, built by the functions the command calls."""
    return new_run_config(*sourced_overrides(build_parser().parse_args(["train", *argv])))


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict, list[str]]:
    """``--print-config`` read back as YAML, and the lines written to stderr."""
    assert main(["train", *argv, "--print-config"]) == 0
    captured = capsys.readouterr()
    return yaml.safe_load(captured.out), captured.err.splitlines()


def _help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> str:
    """``resnets train ARGV`` (holding --help) on a wide terminal, so that no help text is wrapped."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_timm_style_flags_reach_the_printed_config(capsys):
    """Over he2015-cifar, whose values all differ from these (batch 128, step at 32k/48k, wd 1e-4, ...)."""
    printed, err = _printed(
        capsys,
        *("--recipe", "he2015-cifar", "-b", "64", "--opt", "adamw", "--sched", "cosine", "--weight-decay", "0"),
        *("--warmup-epochs", "2", "--label-smoothing", "0.1", "--momentum", "0.8", "--image-size", "48"),
        *("--no-amp", "--no-augment", "--milestones", "10", "20"),
    )
    assert err == []
    recipe = {key: printed["recipe"][key] for key in ("name", "batch_size", "optimizer", "schedule", "weight_decay")}
    assert recipe == {
        "name": "he2015-cifar",
        "batch_size": 64,
        "optimizer": "adamw",
        "schedule": "cosine",
        "weight_decay": 0.0,
    }
    recipe = {key: printed["recipe"][key] for key in ("warmup_epochs", "label_smoothing", "momentum", "augment")}
    assert recipe == {"warmup_epochs": 2.0, "label_smoothing": 0.1, "momentum": 0.8, "augment": False}
    assert printed["recipe"]["milestones"] == [10, 20] and printed["recipe"]["max_steps"] == 64000  # kept
    assert printed["image_size"] == 48 and printed["amp"] is False and printed["channels_last"] is None


def _sample(field: dataclasses.Field, hint: typing.Any, default: typing.Any) -> tuple[list[str], typing.Any]:
    """A valid value for ``field`` that differs from ``default``: the words after the flag, and the value."""
    name = "--" + field.name.replace("_", "-")
    if hint is bool:
        return ([f"--no-{name[2:]}"], False) if default else ([name], True)
    if typing.get_origin(hint) is tuple:
        return [name, "3", "7"], (3, 7)
    if field.name in CHOICES:
        choice = next(c for c in CHOICES[field.name] if c != default)
        return [name, str(choice)], choice
    kinds = {a for a in (*typing.get_args(hint), hint) if a in (int, float, str)}
    if kinds == {int}:
        return [name, "3"], 3
    if kinds == {float}:
        return [name, "0.25"], 0.25
    raise KeyError(f"{field.name}: a str field without choices")


@pytest.mark.parametrize(
    "field", [f for f in dataclasses.fields(Recipe) if f.name not in NOT_FLAGS], ids=lambda f: f.name
)
def test_every_recipe_field_has_a_flag_with_its_help(field, capsys, monkeypatch):
    """Generated from the dataclass: a field added later without a flag (or without help) fails here."""
    hint = typing.get_type_hints(Recipe)[field.name]
    default = getattr(get_recipe("default"), field.name)
    words, value = _sample(field, hint, default)
    assert value != default
    assert getattr(_config(*words).recipe, field.name) == value
    assert field.metadata["help"] in _help(capsys, monkeypatch, "--help")


def test_aliases_none_and_the_old_flags():
    assert _config("--opt", "adamw", "--sched", "linear", "-b", "32").recipe.optimizer == "adamw"
    assert _config("--sched", "linear").recipe.schedule == "linear" and _config("-b", "32").recipe.batch_size == 32
    stepped = _config("--recipe", "he2015-cifar", "--epochs", "2", "--max-steps", "none")
    assert (stepped.recipe.epochs, stepped.recipe.max_steps) == (2.0, None)
    assert _config("--epochs", "none", "--max-steps", "5").recipe.epochs is None
    assert _config("--recipe", "he2015-cifar", "--epochs", "3").recipe.max_steps is None  # --epochs alone: epochs
    assert _config("--recipe", "he2015-cifar", "--milestones").recipe.milestones == ()
    old = _config("--no-amp", "--no-channels-last", "--grad-checkpointing", "--compile", "--lr", "0.3", "--seed", "4")
    assert old.amp is False and old.channels_last is False and old.grad_checkpointing and old.compile
    assert old.recipe.lr == 0.3 and old.seed == 4
    assert (_config("--amp").amp, _config("--channels-last").channels_last) == (True, True)
    assert _config("--log-every", "7").log_every == 7 and _config().log_every is None
    assert _config("--model", "resnet20") == TrainConfig()  # no other flag is an override


def test_a_run_without_a_recipe_is_the_main_job_unless_it_names_a_model_or_starting_weights(tmp_path):
    main_job = _config()
    assert (main_job.model, main_job.data, main_job.recipe) == ("speedrun", "fashion-mnist", get_recipe(MAIN_RECIPE))
    assert _config("--data", "cifar10", "--lr", "0.5").recipe == dataclasses.replace(get_recipe(MAIN_RECIPE), lr=0.5)
    for named in (("--model", "resnet56"), ("--set", "model=resnet56")):
        assert (_config(*named).model, _config(*named).recipe) == ("resnet56", get_recipe("default"))
    (tmp_path / "c.yaml").write_text("model: resnet32\n")
    assert _config("--config", str(tmp_path / "c.yaml")).recipe.name == "default"
    assert _config("--pretrained", "--model", "resnet18").recipe.name == "finetune"
    assert _config("--set", "pretrained=false").recipe.name == MAIN_RECIPE  # starting weights turned off
    assert _config("--recipe", "fast").model == "resnet20"  # a recipe that names no model: the library's default


def test_flags_left_out_keep_the_config_file_and_given_ones_beat_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.03\nbatch_size: 32\naugment: false\namp: false\nmilestones: [5, 9]\nimage_size: 40\n")
    kept = _config("--config", str(path), "--momentum", "0.7")
    assert kept.recipe.lr == 0.03 and kept.recipe.batch_size == 32 and kept.recipe.milestones == (5, 9)
    assert kept.recipe.augment is False and kept.amp is False and kept.image_size == 40
    assert kept.recipe.momentum == 0.7
    ranked = _config("--config", str(path), "--lr", "0.5", "-b", "16", "--augment", "--amp", "--set", "batch_size=8")
    assert (ranked.recipe.lr, ranked.recipe.batch_size, ranked.recipe.augment, ranked.amp) == (0.5, 8, True, True)
    path.write_text("weight_decay: -1\n")
    with pytest.raises(ConfigError, match=re.escape(f"in {path}: weight_decay must be a finite number >= 0")):
        _config("--config", str(path), "--lr", "0.5")
    with pytest.raises(ConfigError, match="^--weight-decay must be .* got -2.0$"):  # the flag that gave it
        _config("--config", str(path), "--weight-decay", "-2")


def test_help_shows_the_chosen_recipes_values(capsys, monkeypatch):
    main_job = _help(capsys, monkeypatch, "--help")
    assert f"--lr LR peak learning rate (per step) (recipe {MAIN_RECIPE}: {get_recipe(MAIN_RECIPE).lr:g})" in main_job
    assert "--augment, --no-augment the paper's pad-and-random-crop" in main_job
    for argv in (("--model", "resnet56", "--help"), ("--help", "--model=resnet56")):  # the recipe a named model gets
        default = _help(capsys, monkeypatch, *argv)
        assert "--lr LR peak learning rate (per step) (recipe default: 0.2)" in default, argv
        assert "(recipe default: none)" in default and "32000 48000" not in default  # milestones, max_steps
    for argv in (
        ("--recipe", "he2015-cifar", "--help"),
        ("--help", "--recipe", "he2015-cifar"),
        ("-h", "--recipe=he2015-cifar"),
    ):
        text = _help(capsys, monkeypatch, *argv)
        assert "multiplied by lr_decay (recipe he2015-cifar: 32000 48000)" in text, argv
        assert "--lr LR peak learning rate (per step) (recipe he2015-cifar: 0.1)" in text
        assert "on the epochs' curve (recipe he2015-cifar: 64000)" in text and "(recipe default:" not in text


def test_help_for_an_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help", "--recipe", "he2016"])
    assert exit_info.value.code == 2
    assert "error: unknown recipe 'he2016'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "text", "where"),
    [
        (("--sched", "onecycle"), "", "(--schedule)"),
        (("--set", "schedule=onecycle"), "", "(--set)"),
        (("--config", "{path}"), "schedule: onecycle\n", "({path})"),
        (("--config", "{path}"), "recipe: {name: fast, schedule: onecycle}\n", "({path})"),
    ],
)
def test_onecycle_in_a_file_or_flag_is_read_as_linear_with_one_warning(argv, text, where, tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    printed, err = _printed(capsys, *(arg.format(path=path) for arg in argv))
    assert printed["recipe"]["schedule"] == "linear"
    warning = (
        f"resnets train: warning: schedule 'onecycle' {where.format(path=path)} was renamed 'linear': a linear "
        "warm-up, then a linear decay, not torch's OneCycleLR; reading it as 'linear'"
    )
    assert err == [warning]


def test_a_run_recorded_as_onecycle_resumes_silently_on_the_linear_curve(tmp_path, bundle, capsys):
    """Relabel a 'linear' run's record 'onecycle', as older versions wrote it: the resumed run is the same run."""
    options = {"schedule": "linear", "epochs": 1, "final_lr_factor": 0.1}
    train(tiny_config(tmp_path / "whole", **options), data=bundle)
    train(tiny_config(tmp_path / "parts", max_steps=2, **options), data=bundle)
    record_path = tmp_path / "parts" / "config.json"
    record = json.loads(record_path.read_text())
    assert record["recipe"]["schedule"] == record["train"]["recipe"]["schedule"] == "linear"
    record["recipe"]["schedule"] = record["train"]["recipe"]["schedule"] = "onecycle"
    record_path.write_text(json.dumps(record))
    capsys.readouterr()
    config = resume_config(tmp_path / "parts", {"max_steps": None})
    assert config.recipe.schedule == "linear"
    assert train(config, data=bundle, resume=True)["steps"] == 6  # 96 images / 16 per step, one epoch
    assert "onecycle" not in capsys.readouterr().err
    assert (tmp_path / "parts" / "steps.csv").read_text() == (tmp_path / "whole" / "steps.csv").read_text()
