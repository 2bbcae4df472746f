"""``resnets train``: parse options into a TrainConfig and call :func:`resnets.train.train`.

Precedence, lowest first: the recipe (``--recipe``), the config file (``--config``), the dedicated
flags (``--epochs``, ``--lr``, ...), then ``--set KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from resnets.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a data set (default: resnet20 on Fashion-MNIST)",
        description="Train a registered model with a named recipe; writes a run directory with config, "
        "metrics, curves and checkpoints. With no arguments: resnet20 on Fashion-MNIST, recipe 'default'.",
    )
    p.add_argument("--model", help="registered model name (see `resnets models`); default resnet20")
    p.add_argument(
        "--data", help="dataset name (fashion-mnist, mnist, cifar10, cifar100) or a path; default fashion-mnist"
    )
    p.add_argument("--data-dir", help="directory holding the named dataset's files")
    p.add_argument("--recipe", help="named recipe (see --list-recipes); default 'default'")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of keys to override (see --print-config)")
    p.add_argument("--epochs", type=float, help="training length in epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (iterations)")
    p.add_argument("--batch-size", type=int, help="images per optimiser step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed of the initial weights, shuffling and augmentation")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory; default runs/<model>-<data>-<timestamp>")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the run in --out if it has a checkpoint, else start it there: for torchrun --max-restarts "
        "and job schedulers that rerun the same command",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--in-channels", type=int, help="input channels the model expects (checked against the data)")
    p.add_argument("--weights", metavar="FILE", help="initial weights (.safetensors, or .pt/.pth weights only)")
    p.add_argument(
        "--reset-head",
        action="store_true",
        help="with --weights: drop the file's classifier and train a fresh one (fine-tuning)",
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
        help="any config or recipe key, e.g. warmup_epochs=1 (repeatable; see --print-config)",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="also keep the weights every N epochs (and the initial ones) as checkpoints/step-S.safetensors, "
        "for instruments that follow training (resnets study dynamics --run)",
    )
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: one per core; 1 can be faster on a busy machine)"
    )
    p.add_argument("--no-amp", action="store_true", help="no mixed precision: train in fp32")
    p.add_argument("--no-channels-last", action="store_true", help="keep the NCHW memory format")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (needs tensorboard)")
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each residual unit in the backward pass instead of storing its activations: "
        "far less memory for deep models, about 1/3 more compute; same losses and gradients",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile (inductor) the training model: the first steps wait for compilation, later ones "
        "usually run faster; needs a C++ compiler (g++) on CPU",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    p.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keys the user gave on the command line or in ``--config`` (flags left out are not overrides)."""
    return sourced_overrides(args)[0]


def sourced_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The overrides, and the ``--config`` file as the source of the keys that no flag replaced.

    Errors then name the file that holds a bad value instead of blaming the command line.
    """
    from resnets.train import load_config_file

    from_file = _flat_recipe(load_config_file(args.config)) if args.config else {}
    given = _flag_overrides(args, from_file)
    sources = {key: str(args.config) for key in from_file if key not in given}
    return {**from_file, **given}, sources


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
    """The keys the flags give, over the recipe and the config file ``from_file``."""
    from resnets.train import parse_assignment

    given: dict[str, Any] = {"recipe": args.recipe} if args.recipe else {}
    flags = {
        "model": args.model,
        "data": args.data,
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "out": args.out,
        "device": args.device,
        "in_channels": args.in_channels,
        "weights": args.weights,
        "val_size": args.val_size,
        "val_fraction": args.val_fraction,
        "threads": args.threads,
        "snapshot_every": args.snapshot_every,
    }
    given.update({k: v for k, v in flags.items() if v is not None})
    if args.epochs is not None and args.max_steps is None and "max_steps" not in from_file:
        given["max_steps"] = None  # --epochs alone sets the length, even for a recipe counted in steps
    if args.model_option:
        options = dict(from_file.get("model_options") or {})
        options.update(parse_assignment(text) for text in args.model_option)
        given["model_options"] = options
    for flag, key in ((args.no_amp, "amp"), (args.no_channels_last, "channels_last")):
        if flag:
            given[key] = False
    for flag, key in (
        (args.tensorboard, "tensorboard"),
        (args.grad_checkpointing, "grad_checkpointing"),
        (args.compile, "compile"),
        (args.reset_head, "reset_head"),
        (args.quiet, "quiet"),
    ):
        if flag:
            given[key] = True
    given.update(parse_assignment(text) for text in args.set)
    return given


def run(args: argparse.Namespace) -> int:
    from resnets.train import (
        RECIPES,
        TrainConfig,
        TrainingInterrupted,
        apply_overrides,
        final_line,
        has_checkpoint,
        resume_config,
        train,
    )

    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name:14s} {recipe.description}")
        return 0
    overrides, sources = sourced_overrides(args)
    if args.auto_resume:
        if not args.out or args.resume:
            raise ConfigError("--auto-resume needs --out RUN_DIR (and no --resume): the run to start or continue")
        if has_checkpoint(args.out):
            args.resume = args.out
    if args.resume:
        if args.out and args.out != args.resume:
            raise ConfigError("--out and --resume name different directories; a resumed run stays in its directory")
        overrides.pop("out", None)
        config = resume_config(args.resume, overrides)
    else:
        config = apply_overrides(TrainConfig(), overrides, "the command line", sources)
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
