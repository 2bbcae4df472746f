"""The benchmark suite behind ``resnets bench`` and ``benchmarks/run.py``.

Every case times a baseline (what a user writes first) and ours in the same process, alternating round by
round, on one device (``--device``: the CPU, or a GPU), and reports medians, the ratio ours/baseline and our
share of that device's peak FLOP/s, which is measured in the same run (resnets.compute.measure_peak). Only
ratios and shares carry over between machines; absolute rates do not.

cases.py     the case table and the name/glob filter
timing.py    alternating rounds, medians, rates on an injectable clock (on a GPU, one that waits for it)
machine.py   what the run ran on (GPU, CPU, flags, threads, precision)
baselines.py what a user writes first: a per-sample Dataset + DataLoader and a plain eager SGD step
training.py  training cases: the baseline against the training engine's own step and loader
inference.py inference cases: eager fp32 NCHW against optimize_for_inference (eager and compiled)
memory.py    peak training memory with and without activation checkpointing, one fresh process per variant
             (the process's RSS: CPU only)
results.py   one row of results, and the ratio and peak-share arithmetic
report.py    the stdout table, bench.json and bench.md
suite.py     runs the selected cases with one set of settings
"""

from resnets.bench.cases import CASES, Case, select_cases
from resnets.bench.suite import Settings, run_suite

__all__ = ["CASES", "Case", "Settings", "run_suite", "select_cases"]
