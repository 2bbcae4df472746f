"""``resnets train``: parse options into a TrainConfig and call :func:`resnets.train.train`.

Every field of :class:`Recipe` is a flag (``--lr``, ``--weight-decay``, ``--augment/--no-augment``), generated
from the dataclass with the help text it carries, so a new field gets its flag without an edit here; the flags
that timm users type (``--opt``, ``--sched``, ``-b``) are aliases. Run fields that are worth a flag have one too.
A flag left out is absent from the parsed namespace (``argparse.SUPPRESS``), so it overrides nothing.

Precedence, lowest first: the recipe (``--recipe``), the config file (``--config``), the flags, then
``--set KEY=VALUE``. ``--help`` shows each recipe flag's value in the recipe that ``--recipe`` names.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Collection, Sequence
from typing import Any

from resnets.cli.dataclass_flags import add_dataclass_flags, shown_value
from resnets.cli.options import add_threads_flag
from resnets.data.augment import PAD_MODES
from resnets.errors import ConfigError, ResnetsError
from resnets.train.config import TrainConfig, apply_overrides
from resnets.train.recipes import (
    MAIN_RECIPE,
    OPTIMIZERS,
    RECIPES,
    RENAMED_SCHEDULES,
    SCHEDULES,
    Recipe,
    get_recipe,
)
from resnets.tta import LEVELS

#: Recipe fields without a flag: they describe a recipe rather than set a hyperparameter.
NOT_FLAGS = ("name", "description", "default_model")  # a recipe's model is trained unless --model names one
#: The short names that timm's and torchvision's scripts use, next to the field's own ``--field-name``.
ALIASES = {"optimizer": ("--opt",), "schedule": ("--sched",), "batch_size": ("-b",)}
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "pad_mode": PAD_MODES, "tta": LEVELS}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a data set (default: the speedrun net on Fashion-MNIST)",
        description="Train a registered model with a named recipe; writes a run directory with config, "
        f"metrics, curves and checkpoints. With no arguments: the speedrun net on Fashion-MNIST, recipe "
        f"'{MAIN_RECIPE}'. A named --model without --recipe trains with recipe 'default'; starting weights "
        "(--weights, --pretrained) with 'finetune'.",
        argument_default=argparse.SUPPRESS,  # a flag left out is not an override of the recipe or --config
        add_help=False,
        usage="%(prog)s [-h] [--recipe NAME] [--model NAME] [--data DATA] [--out RUN_DIR] [options]",
        formatter_class=_Formatter,
    )
    help_action = p.add_argument(
        "-h",
        "--help",
        action=RecipeHelp,
        help="show this help, with the values of the recipe named by --recipe (before or after --help), and exit",
    )
    p.add_argument(
        "--model", help="registered model name (see `resnets models`); default: the recipe's own model, else resnet20"
    )
    p.add_argument(
        "--data", help="dataset name (fashion-mnist, mnist, cifar10, cifar100) or a path; default fashion-mnist"
    )
    p.add_argument("--data-dir", help="directory holding the named dataset's files")
    p.add_argument(
        "--label-column",
        metavar="NAME",
        help="a CSV file's label column (default: the one named label, target or class, any case, else the last)",
    )
    p.add_argument(
        "--recipe",
        help=f"named recipe (see --list-recipes); default '{MAIN_RECIPE}' with no --model, 'default' with one, "
        "'finetune' with starting weights",
    )
    p.add_argument(
        "--config", default=None, metavar="FILE", help="YAML or TOML file of keys to override (see --print-config)"
    )
    p.add_argument("--seed", type=int, help="seed of the initial weights, shuffling and augmentation")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory; default runs/<model>-<data>-<timestamp>")
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    p.add_argument(
        "--auto-resume",
        action="store_true",
        default=False,
        help="continue the run in --out if it has a checkpoint, else start it there: for torchrun --max-restarts "
        "and job schedulers that rerun the same command",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--in-channels", type=int, help="input channels the model expects (checked against the data)")
    p.add_argument("--image-size", type=int, metavar="PIXELS", help="resize image folders to this side")
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="initial weights (.safetensors, or .pt/.pth weights only); the recipe is then 'finetune' unless "
        "--recipe names another",
    )
    p.add_argument(
        "--reset-head",
        action="store_true",
        help="with --weights: drop the file's classifier and train a fresh one (fine-tuning)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the ImageNet weights that torchvision or timm keep in their caches ($TORCH_HOME/hub/"
        "checkpoints, $HF_HOME/hub; never downloaded), with a fresh classifier for this data's classes; the recipe "
        "is then 'finetune' unless --recipe names another",
    )
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-size", type=int, help="hold out N training samples for validation (seeded)")
    split.add_argument("--val-fraction", type=float, help="hold out this fraction of the training samples")
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config field, e.g. drop_path_rate=0.1 (repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config or recipe key, e.g. warmup_epochs=1 (repeatable; wins over the flags; see --print-config)",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="also keep the weights every N epochs (and the initial ones) as checkpoints/step-S.safetensors, "
        "for instruments that follow training (resnets study dynamics --run)",
    )
    add_threads_flag(p)  # checked with the run's config (threads); the engine applies it
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        help="bf16 mixed precision (default: on CUDA and on CPUs with native bf16); --no-amp trains in fp32",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC memory format for image models (default: on); --no-channels-last keeps NCHW",
    )
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (needs tensorboard)")
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each residual unit in the backward pass instead of storing its activations: "
        "far less memory for deep models, about 1/3 more compute; same losses and gradients",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile (inductor) the training model: the first steps wait for compilation, later ones "
        "usually run faster; needs a C++ compiler (g++) on CPU; --no-compile (the default) resumes a compiled run "
        "without it",
    )
    p.add_argument(
        "--log-every",
        type=int,
        metavar="STEPS",
        help="steps between the progress lines printed when stderr is not a terminal (a log file, a pipe); "
        "default: about 20 per epoch, at least one every 50 steps",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.add_argument(
        "--print-config", action="store_true", default=False, help="print the resolved configuration as YAML and exit"
    )
    p.add_argument("--list-recipes", action="store_true", default=False, help="list the named recipes and exit")
    recipe = p.add_argument_group(
        "recipe",
        "Each flag replaces one field of the recipe named by --recipe; '(recipe NAME: VALUE)' is that recipe's "
        "value. The same keys go in --config files and --set KEY=VALUE.",
    )
    help_action.flags = _add_recipe_flags(recipe)
    p.set_defaults(func=run)


def _add_recipe_flags(group: argparse._ArgumentGroup) -> dict[str, tuple[argparse.Action, str]]:
    """``--field-name`` for every Recipe field, typed from its hint; returns each flag and its help text."""
    return add_dataclass_flags(
        group, Recipe, skip=NOT_FLAGS, aliases=ALIASES, choices=CHOICES, types={"schedule": _schedule_flag}
    )


def _schedule_flag(text: str) -> str:
    return current_schedule(text, "--schedule")


def current_schedule(value: Any, where: str) -> Any:
    """``value`` under its current name: an old one is read as the new, with one warning line on stderr."""
    new = RENAMED_SCHEDULES.get(value) if isinstance(value, str) else None
    if new is None:
        return value
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(
            f"resnets train: warning: schedule {value!r} ({where}) was renamed {new!r}: a linear warm-up, then a "
            f"linear decay, not torch's OneCycleLR; reading it as {new!r}",
            file=sys.stderr,
        )
    return new


class _Formatter(argparse.HelpFormatter):
    """Shows ``-h, --help`` as a plain switch: it reads the rest of the line only to find ``--recipe``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, RecipeHelp):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


class RecipeHelp(argparse.Action):
    """``--help`` that shows each recipe flag's value in the recipe named by ``--recipe``.

    ``--recipe`` given after ``--help`` is among the arguments that ``--help`` takes in (all the rest of the
    command line); given before it, it is already in the namespace.
    """

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None, **_: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=argparse.REMAINDER, help=help
        )
        self.flags: dict[str, tuple[argparse.Action, str]] = {}

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        named = _recipe_in(values) or getattr(namespace, "recipe", None)  # the last one given
        after_help = {arg.lstrip("-").partition("=")[0].replace("-", "_") for arg in values}
        name = named or implied_recipe(given_keys(vars(namespace)) | after_help)
        try:
            recipe = get_recipe(name)
        except ResnetsError as error:
            parser.error(str(error))
        for key, (action, text) in self.flags.items():
            action.help = f"{text} (recipe {name}: {shown_value(getattr(recipe, key))})"
        parser.print_help()
        parser.exit()


def _recipe_in(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recipe="):
            return arg.partition("=")[2]
    return None


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keys the user gave on the command line or in ``--config`` (flags left out are not overrides)."""
    return sourced_overrides(args)[0]


def sourced_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The overrides, and where each came from: its flag, ``--set``, or the ``--config`` file for the keys that no
    flag replaced.

    Errors then name what the user typed: ``--weight-decay must be ...``, or the file that holds a bad value.
    """
    from resnets.train import load_config_file, parse_assignment

    from_file = _flat_recipe(load_config_file(args.config)) if args.config else {}
    given = _flag_overrides(args, from_file)
    sources = {key: str(args.config) for key in from_file if key not in given}
    # a bad value is named as the user gave it: by its flag (--weight-decay), or as a key of --set
    sources |= {key: "--" + key.replace("_", "-") for key in given if key in vars(args)}
    sources |= {key: "--set" for key in dict(parse_assignment(text) for text in args.set)}
    overrides = {**from_file, **given}
    if "schedule" in overrides:
        overrides["schedule"] = current_schedule(overrides["schedule"], sources.get("schedule", "the command line"))
    return overrides, sources


def _flat_recipe(overrides: dict[str, Any]) -> dict[str, Any]:
    """``recipe: {name: fast, lr: 0.3}`` as ``recipe: fast, lr: 0.3``, so ``--recipe`` replaces only the name."""
    overrides = dict(overrides)
    nested = overrides.pop("recipe", None)
    if not isinstance(nested, dict):
        return overrides if nested is None else {**overrides, "recipe": nested}
    nested = dict(nested)
    name = nested.pop("name", None)
    flat = {**nested, **overrides}  # top-level keys win over the recipe mapping's, as apply_overrides has it
    return flat if name is None else {**flat, "recipe": name}


def _flag_overrides(args: argparse.Namespace, from_file: dict[str, Any]) -> dict[str, Any]:
    """The keys the flags give, over the recipe and the config file ``from_file``.

    A flag's destination is its config key, and a flag left out is absent from ``args``, so the flags given
    are exactly the config keys present in ``args``.
    """
    from resnets.train import parse_assignment, valid_keys

    keys = {*valid_keys(), "recipe"}
    given = {key: value for key, value in vars(args).items() if key in keys}
    if given.get("epochs") is not None and "max_steps" not in given and "max_steps" not in from_file:
        given["max_steps"] = None  # --epochs alone sets the length, even for a recipe counted in steps
    if given.get("max_steps") is not None and "epochs" not in given and "epochs" not in from_file:
        # --max-steps alone sets the length and the schedule's horizon (Hugging Face's Trainer's rule): a short
        # run warms up and decays over its own steps. --epochs E --max-steps N stops at N on E epochs' curve.
        given["epochs"] = None  # and a new run's warm-up takes its share of the steps (fit_warmup)
    if args.model_option:
        options = dict(from_file.get("model_options") or {})
        options.update(parse_assignment(text) for text in args.model_option)
        given["model_options"] = options
    given.update(parse_assignment(text) for text in args.set)
    return given


def given_keys(values: dict[str, Any]) -> set[str]:
    """The keys a command sets: a value of None or False (``--set pretrained=false``) sets nothing."""
    return {key for key, value in values.items() if value is not None and value is not False}


def implied_recipe(given: Collection[str]) -> str:
    """The recipe of a run that names none, from the keys it gives (flags, ``--config``, ``--set``).

    Starting weights get 'finetune' (the default recipe's lr wrecks a pretrained trunk); a named model gets
    'default', which fits any model; a run that names neither is the main job, whose recipe names its model.
    """
    if "weights" in given or "pretrained" in given:
        return "finetune"
    return "default" if "model" in given else MAIN_RECIPE


def new_run_config(overrides: dict[str, Any], sources: dict[str, str]) -> TrainConfig:
    """A new run's configuration from :func:`sourced_overrides`: the recipe (:func:`implied_recipe` when none is
    named), the config file, the flags, ``--set``, then :func:`fit_warmup`."""
    if "recipe" not in overrides:
        overrides = {**overrides, "recipe": implied_recipe(given_keys(overrides))}
    config = apply_overrides(TrainConfig(), overrides, "the command line", sources)
    return fit_warmup(config, overrides)


def fit_warmup(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A run measured in steps warms up for the share of them that its named recipe's warm-up takes of its epochs.

    ``--max-steps 50`` alone on the default recipe (0.5 of 6 epochs) warms up for 4 steps, not for 0.5 epochs
    (234 steps of Fashion-MNIST, longer than the run). A warm-up given in any form is kept as given.
    """
    r = config.recipe
    named = RECIPES.get(r.name)
    if r.epochs is not None or r.max_steps is None or {"warmup_epochs", "warmup_steps"} & set(overrides):
        return config
    if named is None or named.epochs is None or not named.warmup_epochs:
        return config
    share = max(1, round(r.max_steps * named.warmup_epochs / named.epochs))
    return dataclasses.replace(config, recipe=dataclasses.replace(r, warmup_steps=share))


def run(args: argparse.Namespace) -> int:
    from resnets.train import TrainingInterrupted, final_line, has_checkpoint, resume_config, train

    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name:14s} {recipe.description}")
        return 0
    overrides, sources = sourced_overrides(args)
    out = vars(args).get("out")
    if args.auto_resume:
        if not out or args.resume:
            raise ConfigError("--auto-resume needs --out RUN_DIR (and no --resume): the run to start or continue")
        if has_checkpoint(out):
            args.resume = out
    if args.resume:
        if out and out != args.resume:
            raise ConfigError("--out and --resume name different directories; a resumed run stays in its directory")
        overrides.pop("out", None)
        config = resume_config(args.resume, overrides)
    else:
        config = new_run_config(overrides, sources)
        if config.reset_head and not config.weights:
            raise ConfigError("--reset-head replaces the classifier of a weight file; give the file with --weights")
    if args.print_config:
        print(config.format(), end="")
        return 0
    try:
        summary = train(config, resume=bool(args.resume))
    except TrainingInterrupted as stopped:
        print(f"resnets train: {stopped}", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(final_line(summary))
    return 0
