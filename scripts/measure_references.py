"""Measure the studies' convergence references: each default net's recipe run at twice its length.

    python scripts/measure_references.py --out /tmp/references [--budget cpu] [--factor 2]

Trains :func:`resnets.studies.plans.reference_specs` (seed 0, fp32, on the studies' default data) into
OUT/runs through the same code the studies train with, skipping runs already finished there, and prints the
entries of :data:`resnets.studies.plans.REFERENCES` to paste, with each run's test error, steps and wall time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnets.studies import Context
from resnets.studies.job import cpu_model
from resnets.studies.plans import DEFAULT_DATA, reference_specs
from resnets.studies.trained import train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for OUT/runs (reused: finished runs are not retrained)")
    parser.add_argument("--budget", default="cpu", choices=("cpu", "paper"))
    parser.add_argument("--factor", type=int, default=2, help="how many times the default length (default 2)")
    args = parser.parse_args()
    context = Context(out=args.out, quiet=True)
    cpu = cpu_model() or "this CPU"
    for spec in reference_specs(args.budget, args.factor):
        path = train_run(context, spec)
        summary = json.loads((Path(path) / "summary.json").read_text())
        data = spec.data or DEFAULT_DATA
        how = (
            f"{spec.recipe} at {spec.steps} steps (seed 0, fp32): scripts/measure_references.py on {cpu}, "
            f"{summary['wall_time_s'] / 60:.1f} min"
        )
        print(
            f"    ({spec.label!r}, {spec.recipe!r}, {data!r}): "
            f"Reference({summary['test_error']:.2f}, {spec.steps}, {how!r}),",
            flush=True,
        )


if __name__ == "__main__":
    main()
