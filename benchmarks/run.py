"""The benchmark suite: the same code and options as ``resnets bench`` (see ``resnets bench --help``).

python benchmarks/run.py                       # every case; minutes on a small CPU
python benchmarks/run.py --cases 'train/*' --out results/bench
python benchmarks/run.py --quick --no-compile  # a smoke test of every case
"""

from __future__ import annotations

import sys

from resnets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
