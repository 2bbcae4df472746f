"""``resnets predict``: the top-k labels of image files, with their probabilities."""

from __future__ import annotations

import argparse
import sys

from resnets.cli.options import add_compile_flag, add_threads_flag, use_threads
from resnets.io.predictions import FORMATS, SUFFIXES, check_output, choose_format, render, write_predictions
from resnets.predict import check_top_k, classify, expand_images
from resnets.runs.exported import open_source
from resnets.words import counted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a trained run or an exported model",
        description="Print (or write) the top-k labels of each image with their probabilities. Images are "
        "converted to the model's channel count, resized to its sample size and normalised with its training "
        "statistics, all read from the run directory or from the exported file itself.",
    )
    parser.add_argument(
        "source",
        metavar="MODEL",
        help="a run directory, or a .safetensors, .torchscript.pt or .onnx file exported from one",
    )
    parser.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help="image files (PNG, JPEG, ...) or folders: a folder stands for the images under it, recursively, "
        "sorted; other files in it are skipped and counted. A model trained on vectors scores the rows of CSV "
        "and .npz files instead (the training file's feature columns, in its order)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="which checkpoint of a run (default: best where a validation split chose one, else last)",
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument(
        "--format",
        choices=FORMATS,
        help="text (default), csv (path,rank,label,probability), json (one array) or jsonl (one object a line); "
        f"default with --output: from its extension ({', '.join(SUFFIXES)})",
    )
    formats.add_argument("--json", action="store_true", help="print one JSON object per image (--format jsonl)")
    parser.add_argument("--output", metavar="FILE", help="write the predictions to FILE (atomically) instead")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_compile_flag(parser)
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_threads(args.threads)
    check_top_k(args.top_k)
    format = choose_format("jsonl" if args.json else args.format, args.output)
    images = expand_images(args.images)
    if args.output:  # before the model is opened: a refused file costs no work
        check_output(args.output, protected=[args.source, *images.files])
    model = open_source(args.source, checkpoint=args.checkpoint, device=args.device)
    predictions = classify(model, images.files, top_k=args.top_k, compile=args.compile)
    if images.skipped:
        files = "file that is not an image" if images.skipped == 1 else "files that are not images"
        print(f"skipped {images.skipped} {files}", file=sys.stderr)
    if args.output:
        write_predictions(predictions, args.output, format)
        print(f"wrote {args.output} ({counted(len(predictions), 'prediction')}, {format})")
    else:
        print(render(predictions, format), end="")
    return 0
