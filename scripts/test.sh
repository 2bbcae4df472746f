#!/usr/bin/env bash
# Set up the test environment .venv-test and run the whole test suite, slow tests included.
# torchvision and timm (for the parity tests against their models) install here only as
# torch==2.14.1 with torchvision==0.29.1 and timm==1.0.31; onnxruntime checks the ONNX export, tensorboard
# reads back the event files --tensorboard writes;
# ruff checks the code's lint and layout before the tests run. The suite runs on two pytest-xdist workers
# (TEST_WORKERS to change it), one torch thread each (tests/conftest.py), a test file per worker at a time.
#
# What runs: every test, slow ones included, except the big twins (marker "big_twin": registry-wide tests on a
# deeper or wider twin of a model the same test checks at a smaller size); TESTS=all runs those too.
#
# Precision: the suite plays a CPU without native bf16 (RESNETS_NATIVE_BF16=0, set by tests/conftest.py) unless
# RESNETS_NATIVE_BF16 is given, so every machine runs the same branch. The precision-sensitive files (marker
# "precision": they train, evaluate, predict, export or run torchrun) then run again as the other kind of CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
pip=(.venv-test/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 timm==1.0.31
"${pip[@]}" --no-build-isolation -e ".[test,onnx,torchvision,timm,tensorboard]"  # torch brought setuptools
.venv-test/bin/ruff check src tests benchmarks
.venv-test/bin/ruff format --check src tests benchmarks

pytest=(.venv-test/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile)
if [ "${TESTS:-}" = all ]; then chosen=""; else chosen="not big_twin"; fi
first=${RESNETS_NATIVE_BF16:-0}
case "$first" in 0 | no | false) other=1 ;; *) other=0 ;; esac
echo "== the whole suite as a CPU $( [ "$other" = 1 ] && echo without || echo with ) native bf16 (RESNETS_NATIVE_BF16=$first)"
RESNETS_NATIVE_BF16=$first "${pytest[@]}" -m "$chosen" "$@"
echo "== the precision-sensitive files again, as a CPU $( [ "$other" = 1 ] && echo with || echo without ) native bf16 (RESNETS_NATIVE_BF16=$other)"
if [ $# -eq 0 ]; then  # name the files, so that only they are collected (collecting all takes ~20 s)
    mapfile -t files < <(.venv-test/bin/python -c \
        "from tests.conftest import PRECISION_SENSITIVE as p; print('\n'.join('tests/' + f for f in p))")
    set -- "${files[@]}"
fi
status=0
RESNETS_NATIVE_BF16=$other "${pytest[@]}" -m "precision${chosen:+ and $chosen}" "$@" || status=$?
[ "$status" -eq 5 ] && status=0  # pytest's "no tests collected": the arguments chose none of these files
exit "$status"
