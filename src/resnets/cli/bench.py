"""``resnets bench``: the benchmark suite, each case against what a user writes first, in the same run."""

from __future__ import annotations

import argparse
import shlex

from resnets.cli.options import add_threads_flag, use_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time training, inference and memory against straightforward baselines, in the same run",
        description="Each case runs a baseline (eager fp32 NCHW, a per-sample DataLoader, torchvision's resnet50 "
        "at ImageNet shapes) and ours alternately in the same process and prints medians, the ratio "
        "ours/baseline and our share of the machine's peak FLOP/s (a large matmul, measured in this run). "
        "Absolute rates depend on the machine and on what else runs on it; the ratios are the result.",
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="NAME", help="case names or globs, e.g. 'train/*' (default: all; see --list)"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--rounds", type=int, help="alternating rounds; figures are medians (default 5; quick 1)")
    parser.add_argument("--steps", type=int, help="timed steps (or forward passes) per round (default: per case)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each side first (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke-test settings: 1 round, 2 steps, small batches")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where every case runs: cpu (default), cuda, cuda:N, or auto (a GPU where there is one); memory cases "
        "read the process's RSS and run on the CPU only",
    )
    add_threads_flag(parser)  # the suite applies it (Settings.threads), around every case
    parser.add_argument("--memory-batch", type=int, metavar="N", help="batch of the memory cases (default 128)")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile variants (training and inference)"
    )
    parser.add_argument("--out", metavar="DIR", help="also write DIR/bench.json (every number) and DIR/bench.md")
    parser.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The ``resnets bench`` command that repeats this run (what bench.md and bench.json quote)."""
    parts = ["resnets", "bench"]
    if args.cases:
        parts += ["--cases", *args.cases]
    for flag, value in (
        ("--rounds", args.rounds),
        ("--steps", args.steps),
        ("--threads", args.threads),
        ("--memory-batch", args.memory_batch),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.warmup != 1:
        parts += ["--warmup", str(args.warmup)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    parts += ["--quick"] if args.quick else []
    parts += ["--no-compile"] if args.no_compile else []
    parts += ["--out", args.out] if args.out else []
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from resnets.bench import CASES, Settings, run_suite, select_cases
    from resnets.bench.report import format_table, write_report

    if args.list:
        width = max(len(case.name) for case in CASES)
        for case in CASES:
            batch = f"{case.batch}" + (f" (cuda {case.cuda_batch})" if case.cuda_batch else "")
            print(f"{case.name:<{width}}  {case.kind:<9}  batch {batch:<16} {case.description}")
        return 0
    cases = select_cases(args.cases)
    use_threads(args.threads)  # checked (and set) before any case runs; the suite sets it again around each
    settings = Settings(
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        quick=args.quick,
        threads=args.threads,
        compile=not args.no_compile,
        memory_batch=args.memory_batch,
        device=args.device,
    )
    result = run_suite(cases, settings, log=lambda line: print(line, flush=True))
    print()
    print(format_table(result))
    if args.out:
        json_path, md_path = write_report(result, command_line(args), args.out)
        print(f"wrote {json_path}, {md_path}")
    return 0
