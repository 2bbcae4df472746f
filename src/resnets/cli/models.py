"""``resnets models`` and ``resnets summary``: what the registry holds, with computed sizes and costs."""

from __future__ import annotations

import argparse
import json

from resnets.errors import UnknownNameError
from resnets.models.profile import build_meta, count_macs, count_parameters, default_input, format_count, summarize
from resnets.models.registry import get_model_entry, list_models


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="list the registered models with parameters and multiply-adds",
        description="List registered models. Parameters and multiply-adds (MACs) are computed at each model's "
        "default input size and number of classes, not typed in.",
    )
    models.add_argument(
        "pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'resnet*' (default: all)"
    )
    models.add_argument("--family", help="only models of this family (e.g. resnet-cifar)")
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
    rows = []
    for name in names:
        entry = get_model_entry(name)
        model = build_meta(name)
        size = default_input(model, name)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "params": count_parameters(model),
                "macs": count_macs(model, size),
                "input_size": list(size),
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
    header = f"{'model':<{width}} {'family':<{fam}} {'params':>9} {'MACs':>9} {'input':<12} description"
    print(header)
    print("-" * len(header))
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        print(
            f"{r['name']:<{width}} {r['family']:<{fam}} {format_count(r['params']):>9} {format_count(r['macs']):>9} "
            f"{size:<12} {r['description']}"
        )
    return 0


def run_summary(args: argparse.Namespace) -> int:
    model = build_meta(args.name, num_classes=args.num_classes, in_channels=args.in_channels)
    size = tuple(args.input_size) if args.input_size else default_input(model, args.name)
    rows = summarize(model, size)
    print(f"{args.name}: input {tuple(size)}, {model.num_classes} classes")
    print(f"{'part':<26} {'output shape':<18} {'params':>12} {'MACs':>14}")
    for r in rows:
        print(f"{r.name:<26} {r.output_shape!s:<18} {r.params:>12,} {r.macs:>14,}")
    print(f"{'total':<26} {'':<18} {count_parameters(model):>12,} {sum(r.macs for r in rows):>14,}")
    return 0
