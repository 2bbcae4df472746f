"""``resnets eval``: top-1/top-5 error, per-class accuracy and a confusion matrix of a run or weight file."""

from __future__ import annotations

import argparse

from resnets.cli.options import add_compile_flag, add_threads_flag, use_threads
from resnets.evaluation import check_report_targets, evaluate_source, report_dir, write_eval_report
from resnets.io.text import printable
from resnets.metrics import format_table
from resnets.runs.open import CHECKPOINTS, SPLITS
from resnets.tta import LEVELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a run directory or weight file on a data split",
        description="Evaluate a trained model: top-1 and top-5 error (in percent; top-5 only with more than 5 "
        "classes), per-class accuracy, and the confusion matrix as eval.json and confusion.png. A run directory "
        "is measured as training measured it: its own data and splits, its training statistics and precision, "
        "so `resnets eval RUN_DIR` needs no other argument, and neither does an exported file (.safetensors, "
        ".torchscript.pt, .onnx), which carries the run's record. A bare weight file needs --model and --data.",
    )
    parser.add_argument(
        "source",
        metavar="RUN_DIR|FILE",
        help="a run directory, a .safetensors/.pth/.pt weight file, or an exported .torchscript.pt or .onnx model",
    )
    parser.add_argument("--model", help="model name, needed for a bare weight file (see `resnets models`)")
    parser.add_argument("--data", help="dataset name or path (default: the run's own data)")
    parser.add_argument("--data-dir", help="where the data set lives, if it moved since training")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split to evaluate (default: test)")
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        help="which checkpoint of a run (default: best where a validation split chose one, else last)",
    )
    parser.add_argument(
        "--out",
        help="folder for eval.json and confusion.png (default: RUN_DIR/eval-SPLIT, "
        "or eval-NAME-SPLIT here for a weight file)",
    )
    parser.add_argument(
        "--tta",
        type=int,
        choices=LEVELS,
        help="test-time augmentation: 0 none, 1 each image and its mirror, 2 also 1-pixel shifts "
        "(default: the run's recipe's)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_compile_flag(parser)
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_threads(args.threads)
    out = report_dir(args.source, args.split, args.out)
    check_report_targets(out)  # before the evaluation: a refused folder costs no work
    result, described = evaluate_source(
        args.source,
        data=args.data,
        data_dir=args.data_dir,
        split=args.split,
        model=args.model,
        device=args.device,
        checkpoint=args.checkpoint,
        compile=args.compile,
        tta=args.tta,
    )
    paths = write_eval_report(result, described, out)
    header = (
        f"{described['model']} ({described['checkpoint']}) on {described['data']} {args.split}, "
        f"normalised with the {described['statistics']}'s statistics, {described['precision']}, "
        f"{', '.join(described['inference'])}"
    )
    lines = [header, *format_table(result).splitlines(), f"wrote {paths['json']} and {paths['png']}"]
    print("\n".join(printable(line) for line in lines))  # class and data names come from files
    return 0
