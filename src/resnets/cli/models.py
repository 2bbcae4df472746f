"""``resnets models`` and ``resnets summary``: what the registry holds, with computed sizes and costs."""

from __future__ import annotations

import argparse
import json

from resnets.errors import ConfigError, InputShapeError, UnknownNameError
from resnets.models.base import INPUT_RANKS, SkipNetwork
from resnets.models.profile import build_meta, count_parameters, default_input, format_count, registry_counts, summarize
from resnets.models.registry import get_model_entry, list_models
from resnets.words import counted


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="list the registered models with their parameters (and multiply-adds with --macs)",
        description="List registered models. Parameters and multiply-adds (MACs) are computed at each model's "
        "default input size and number of classes, not typed in, and kept in the user cache "
        "($RESNETS_CACHE_DIR or ~/.cache/resnets) until the package or the model code changes.",
    )
    models.add_argument(
        "pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*' (default: all)"
    )
    models.add_argument("--family", help="only models of this family (e.g. resnet-cifar)")
    models.add_argument(
        "--macs",
        action="store_true",
        help="also count multiply-adds of one forward pass (runs each model once on the meta device; "
        "about 20 s for all models the first time, then read from the cache)",
    )
    models.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    models.set_defaults(func=run_models)

    summary = subparsers.add_parser(
        "summary",
        help="per-stage output shapes, parameters and MACs of one model",
        description="Show a model's stages with output shapes, parameters and multiply-adds (MACs).",
    )
    summary.add_argument("name", help="registered model name (see `resnets models`)")
    summary.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    summary.add_argument("--in-channels", type=int, help="input channels or features (default: the model's)")
    summary.add_argument(
        "--input-size", type=int, nargs="+", metavar="N", help="input size without batch, e.g. 3 64 64"
    )
    summary.set_defaults(func=run_summary)


def run_models(args: argparse.Namespace) -> int:
    families = sorted({get_model_entry(n).family for n in list_models()})
    if args.family and args.family not in families:
        raise UnknownNameError("model family", args.family, families)
    names = [n for n in list_models(args.pattern) if not args.family or get_model_entry(n).family == args.family]
    if not names:
        print(f"no model matches {args.pattern!r}" + (f" in family {args.family!r}" if args.family else ""))
        return 1
    counts = registry_counts(names, macs=args.macs)
    rows = []
    for name in names:
        entry = get_model_entry(name)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "params": counts[name].params,
                "macs": counts[name].macs,  # null unless --macs
                "input_size": list(entry.input_size),
                "num_classes": entry.num_classes,
                "description": entry.description,
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    width = max(len("model"), *(len(r["name"]) for r in rows))
    fam = max(len("family"), *(len(r["family"]) for r in rows))
    macs_header = f" {'MACs':>9}" if args.macs else ""
    header = f"{'model':<{width}} {'family':<{fam}} {'params':>9}{macs_header} {'input':<12} description"
    print(header)
    print("-" * len(header))
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        macs = f" {format_count(r['macs']):>9}" if args.macs else ""
        print(
            f"{r['name']:<{width}} {r['family']:<{fam}} {format_count(r['params']):>9}{macs} {size:<12} "
            f"{r['description']}"
        )
    if not args.macs:
        print("(multiply-adds: `resnets models --macs`, or `resnets summary NAME` for one model by stage)")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    if args.in_channels is not None and args.in_channels < 1:
        raise ConfigError(f"--in-channels must be at least 1, got {args.in_channels}")
    if args.num_classes is not None and args.num_classes < 0:
        raise ConfigError(f"--num-classes must be at least 0 (0: features only), got {args.num_classes}")
    model = build_meta(args.name, num_classes=args.num_classes, in_channels=args.in_channels)
    size = tuple(args.input_size) if args.input_size else default_input(model, args.name)
    check_input_size(model, args.name, size)
    try:
        rows = summarize(model, size)
    except InputShapeError as error:  # the model's own check: too small for its poolings, too many tokens, ...
        raise InputShapeError(f"--input-size {_spelled(size)} does not fit {args.name}: {error}") from None
    print(f"{args.name}: input {tuple(size)}, {model.num_classes} classes")
    print(f"{'part':<26} {'input shape':<18} {'output shape':<18} {'params':>12} {'MACs':>14}")
    for r in rows:
        print(f"{r.name:<26} {r.input_shape!s:<18} {r.output_shape!s:<18} {r.params:>12,} {r.macs:>14,}")
    total = f"{count_parameters(model):>12,} {sum(r.macs for r in rows):>14,}"
    print(f"{'total':<26} {'':<18} {'':<18} {total}")
    return 0


def check_input_size(model: SkipNetwork, name: str, size: tuple[int, ...]) -> None:
    """Refuse an ``--input-size`` of the wrong rank or channel count in terms of this command's flags."""
    expected = model.expected_input_shape()
    if min(size) < 1:
        raise ConfigError(f"--input-size {_spelled(size)}: every size must be at least 1; {name} takes {expected}")
    rank = INPUT_RANKS[model.input_kind] - 1  # without the batch
    default = _spelled(default_input(model, name))
    if len(size) != rank:
        raise InputShapeError(
            f"--input-size {_spelled(size)} has {counted(len(size), 'number')}, but {name} takes {expected}: "
            f"give the {counted(rank, 'size')} after the batch, e.g. --input-size {default}"
        )
    channels = size[0] if model.input_kind == "image" else size[-1]
    if channels != model.in_channels:
        what = "channel" if model.input_kind == "image" else "feature"
        raise InputShapeError(
            f"--input-size {_spelled(size)} has {counted(channels, what)}, but {name} is built for "
            f"{model.in_channels} (it takes {expected}); add --in-channels {channels} to build it for "
            f"{counted(channels, what)}"
        )


def _spelled(size: tuple[int, ...]) -> str:
    return " ".join(map(str, size))
