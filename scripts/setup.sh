#!/usr/bin/env bash
# Set up resnets on a fresh Debian machine with Python 3.11, as root: the Fashion-MNIST data package
# (the default data set) and a virtual environment .venv with the CPU build of PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    apt-get update -q
    apt-get install -y -q dataset-fashion-mnist
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The CPU build of torch 2.13.0 first: pyproject's torch range then installs nothing more, and no
# multi-GB CUDA build is pulled in.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
echo "resnets is installed in .venv: run .venv/bin/resnets --help"
