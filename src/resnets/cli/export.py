"""``resnets export``: write a run or weight file as ONNX, TorchScript or safetensors, verified."""

from __future__ import annotations

import argparse

from resnets.cli.options import add_threads_flag, use_threads
from resnets.export import FORMATS, export_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run directory or weight file to ONNX, TorchScript or safetensors",
        description="Export a trained model. ONNX and TorchScript files are run on a random batch after "
        "writing and compared with the PyTorch model; the maximum absolute difference is printed. "
        "ONNX has a dynamic batch axis, and dynamic height and width where the model takes any image size "
        "(input 'input', output 'logits'). Every file carries the run record (model, classes, mean, std, input "
        "size, layout), so `resnets predict FILE` and `resnets eval FILE` need no run directory.",
    )
    parser.add_argument("source", metavar="RUN_DIR|WEIGHTS", help="a run directory, or a .safetensors/.pth/.pt file")
    parser.add_argument("--model", help="model name, needed for a bare weight file (see `resnets models`)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="what to write")
    parser.add_argument("--out", help="output file (default: RUN_DIR/exports/MODEL.EXT, or STEM.EXT here)")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="which checkpoint of a run (default: best where a validation split chose one, else last)",
    )
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="write the fast inference graph: BatchNorms folded into their convolutions (and, for TorchScript, "
        "frozen); checked against the unoptimised model like any export",
    )
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_threads(args.threads)
    result = export_model(
        args.source,
        args.format,
        model=args.model,
        out=args.out,
        opset=args.opset,
        checkpoint=args.checkpoint,
        optimize=args.optimize,
    )
    print(f"wrote {result.path} ({result.exporter})")
    if result.sidecar:
        print(f"wrote {result.sidecar} (model name and configuration)")
    if result.max_abs_diff is not None:
        sizes = f" of {' and '.join(result.checked)} inputs" if result.checked else ""
        print(
            f"verified: max |exported - PyTorch| = {result.max_abs_diff:.3g} on random batches{sizes} "
            f"(logits up to {result.max_abs_output:.3g})"
        )
    if result.note:
        print(result.note)
    return 0
