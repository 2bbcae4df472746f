"""Recipes and configuration: printing, overriding from the CLI, YAML and TOML, and unknown keys."""

from __future__ import annotations

import pytest
import yaml

from resnets.cli import main
from resnets.errors import ConfigError, UnknownNameError
from resnets.train import DEFAULT_EPOCHS, TrainConfig, apply_overrides, get_recipe, load_config_file


def test_he2015_recipe_has_the_papers_values():
    r = get_recipe("he2015-cifar")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert r.milestones == (32000, 48000) and r.lr_decay == 0.1 and r.max_steps == 64000
    assert (r.deep_warmup_lr, r.deep_warmup_min_depth, r.deep_warmup_until_error) == (0.01, 110, 80.0)


def test_default_config_trains_resnet20_on_fashion_mnist():
    config = TrainConfig()
    assert (config.model, config.data, config.recipe.name) == ("resnet20", "fashion-mnist", "default")
    assert config.recipe.epochs == DEFAULT_EPOCHS


def test_print_config_shows_overrides(capsys):
    assert (
        main(
            [
                "train",
                "--print-config",
                "--recipe",
                "fast",
                "--lr",
                "0.05",
                "--set",
                "milestones=[10, 20]",
                "--model-option",
                "drop_path_rate=0.1",
            ]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["recipe"]["name"] == "fast"
    assert printed["recipe"]["lr"] == 0.05
    assert printed["recipe"]["milestones"] == [10, 20]
    assert printed["recipe"]["label_smoothing"] == 0.1  # kept from the recipe
    assert printed["model_options"] == {"drop_path_rate": 0.1}


def test_printed_config_reads_back_as_a_config_file(tmp_path, capsys):
    main(["train", "--print-config", "--recipe", "he2015-cifar", "--seed", "3"])
    path = tmp_path / "printed.yaml"
    path.write_text(capsys.readouterr().out)
    config = apply_overrides(TrainConfig(), load_config_file(path))
    assert config.recipe == get_recipe("he2015-cifar") and config.seed == 3


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(ConfigError) as caught:
        apply_overrides(TrainConfig(), load_config_file(path), str(path))
    message = str(caught.value)
    assert "'learning_rate'" in message and "warmup_epochs" in message and "batch_size" in message


def test_unknown_key_on_the_command_line_exits_2(capsys):
    assert main(["train", "--print-config", "--set", "momentun=0.8"]) == 2
    assert "unknown key 'momentun'" in capsys.readouterr().err


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(UnknownNameError, match="he2015-cifar"):
        apply_overrides(TrainConfig(), {"recipe": "he2016"})


def test_yaml_and_toml_files_give_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text("model: resnet32\nrecipe:\n  name: he2015-cifar\n  lr: 0.05\nepochs: 3\n")
    (tmp_path / "c.toml").write_text('model = "resnet32"\nepochs = 3\n[recipe]\nname = "he2015-cifar"\nlr = 0.05\n')
    from_yaml = apply_overrides(TrainConfig(), load_config_file(tmp_path / "c.yaml"))
    from_toml = apply_overrides(TrainConfig(), load_config_file(tmp_path / "c.toml"))
    assert from_yaml == from_toml
    assert from_yaml.model == "resnet32" and from_yaml.recipe.lr == 0.05 and from_yaml.recipe.epochs == 3.0
    assert from_yaml.recipe.milestones == (32000, 48000)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="batch_size .* must be int"):
        apply_overrides(TrainConfig(), {"batch_size": "big"})


def test_epochs_flag_replaces_a_step_count(capsys):
    main(["train", "--print-config", "--recipe", "he2015-cifar", "--epochs", "2"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["recipe"]["epochs"] == 2 and printed["recipe"]["max_steps"] is None


def test_list_recipes(capsys):
    assert main(["train", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("he2015-cifar", "fast", "default"))


def test_cli_reads_a_config_file_and_flags_win_over_it(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('recipe = "fast"\nlr = 0.3\nbatch_size = 64\nseed = 5\n')
    assert main(["train", "--config", str(path), "--batch-size", "32", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["recipe"]["name"] == "fast" and printed["recipe"]["lr"] == 0.3
    assert printed["recipe"]["batch_size"] == 32 and printed["seed"] == 5


def test_optimizer_field_picks_sgd_or_adamw_and_refuses_others():
    import torch

    from resnets.train.optim import make_optimizer

    model = torch.nn.Linear(3, 2)
    sgd = make_optimizer(model, get_recipe("fast"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 5e-4
    adamw = make_optimizer(model, apply_overrides(TrainConfig(), {"optimizer": "adamw", "lr": 1e-3}).recipe)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)
    assert adamw.defaults["lr"] == 1e-3
    with pytest.raises(ConfigError, match="optimizer must be one of .*sgd.*adamw"):
        apply_overrides(TrainConfig(), {"optimizer": "lion"})
