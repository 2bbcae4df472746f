"""``resnets predict``: the top-k labels of image files, with their probabilities."""

from __future__ import annotations

import argparse
import json

from resnets.cli.options import add_compile_flag
from resnets.predict import predict_images


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a trained run",
        description="Print the top-k labels of each image with their probabilities. Images are converted to "
        "the run's channel count, resized to its sample size and normalised with its training statistics.",
    )
    parser.add_argument("source", metavar="RUN_DIR", help="a run directory (or a safetensors file exported from one)")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="which checkpoint of a run (default: best where a validation split chose one, else last)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_compile_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    predictions = predict_images(
        args.source,
        args.images,
        top_k=args.top_k,
        device=args.device,
        checkpoint=args.checkpoint,
        compile=args.compile,
    )
    for prediction in predictions:
        if args.json:
            print(json.dumps(prediction.to_dict()))
            continue
        print(prediction.path)
        for label, probability in zip(prediction.labels, prediction.probabilities):
            print(f"  {100 * probability:6.2f}%  {label}")
    return 0
