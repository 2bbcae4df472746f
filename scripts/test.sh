#!/usr/bin/env bash
# Set up the test environment .venv-test and run the whole test suite, slow tests included.
# torchvision and timm (for the parity tests against their models) install here only as
# torch==2.14.1 with torchvision==0.29.1 and timm==1.0.31; onnxruntime checks the ONNX export;
# ruff checks the code's lint and layout before the tests run. The suite runs on two pytest-xdist workers
# (TEST_WORKERS to change it), one torch thread each (tests/conftest.py), a test file per worker at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
pip=(.venv-test/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 timm==1.0.31
"${pip[@]}" -e ".[test,onnx,torchvision,timm]"
.venv-test/bin/ruff check src tests benchmarks
.venv-test/bin/ruff format --check src tests benchmarks
exec .venv-test/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
