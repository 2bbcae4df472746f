"""``resnets eval``: top-1/top-5 error, per-class accuracy and a confusion matrix of a run or weight file."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnets.evaluate import SPLITS, evaluate_source, format_table, write_eval_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a run directory or weight file on a data split",
        description="Evaluate a trained model: top-1 and top-5 error (in percent; top-5 only with more than 5 "
        "classes), per-class accuracy, and the confusion matrix as eval.json and confusion.png. A run directory "
        "is normalised with its own training statistics; a bare weight file with the data's.",
    )
    parser.add_argument("source", metavar="RUN_DIR|WEIGHTS", help="a run directory, or a .safetensors/.pth/.pt file")
    parser.add_argument("--model", help="model name, needed for a bare weight file (see `resnets models`)")
    parser.add_argument("--data", required=True, help="dataset name (e.g. fashion-mnist, cifar10) or path")
    parser.add_argument("--data-dir", help="where the named dataset lives")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--image-size", type=int, help="resize image folders to this side (default: the run's)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which checkpoint of a run directory (default: best, else last)")  # fmt: skip
    parser.add_argument("--out", help="folder for eval.json and confusion.png (default: RUN_DIR/eval-SPLIT, "
                        "or eval-NAME-SPLIT here for a weight file)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result, described = evaluate_source(
        args.source, args.data, model=args.model, data_dir=args.data_dir, split=args.split,
        batch_size=args.batch_size, device=args.device, image_size=args.image_size, which=args.checkpoint,
    )  # fmt: skip
    source = Path(args.source)
    out = Path(args.out) if args.out else (
        source / f"eval-{args.split}" if source.is_dir() else Path(f"eval-{source.stem}-{args.split}")
    )  # fmt: skip
    paths = write_eval_report(result, described, out)
    print(f"{described['model']} ({described['checkpoint']}) on {described['data']} {args.split}, "
          f"normalised with the {described['statistics']}'s statistics")  # fmt: skip
    print(format_table(result))
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0
