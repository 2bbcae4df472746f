"""Training: recipes, the resumable training loop, and what it writes into a run directory.

>>> from resnets.train import TrainConfig, get_recipe, train
>>> summary = train(TrainConfig(model="resnet20", data="fashion-mnist", recipe=get_recipe("fast")))
"""

from resnets.train.config import TrainConfig, apply_overrides, load_config_file, parse_assignment, valid_keys
from resnets.train.engine import has_checkpoint, resume_config, stop_step, train
from resnets.train.recipes import DEFAULT_EPOCHS, RECIPES, Recipe, get_recipe, list_recipes
from resnets.train.schedule import LRSchedule, weighted_depth
from resnets.train.signals import TrainingInterrupted
from resnets.train.summary import final_line

__all__ = [
    "DEFAULT_EPOCHS",
    "RECIPES",
    "LRSchedule",
    "Recipe",
    "TrainConfig",
    "TrainingInterrupted",
    "apply_overrides",
    "final_line",
    "get_recipe",
    "has_checkpoint",
    "list_recipes",
    "load_config_file",
    "parse_assignment",
    "resume_config",
    "stop_step",
    "train",
    "valid_keys",
    "weighted_depth",
]
