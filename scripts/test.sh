#!/usr/bin/env bash
# Set up the test environment .venv-test and run the whole test suite, slow tests included.
# torchvision (for the parity tests against torchvision's models) installs here only as
# torch==2.14.1 with torchvision==0.29.1; onnxruntime checks the ONNX export.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
pip=(.venv-test/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -e ".[test,onnx,torchvision]"
exec .venv-test/bin/python -m pytest "$@"
