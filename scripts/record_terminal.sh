#!/usr/bin/env bash
# Record what a user sees in the first minute of `resnets train` on a terminal: the command runs in a detached
# tmux window of 110x24 characters, and the screen is printed as it stands after SECONDS_TO_RECORD seconds.
# Usage: bash scripts/record_terminal.sh [resnets train arguments...]   (RESNETS=path/to/resnets to choose one)
set -euo pipefail
cd "$(dirname "$0")/.."
resnets=${RESNETS:-.venv/bin/resnets}
seconds=${SECONDS_TO_RECORD:-60}
out=$(mktemp -d)
session="resnets-record-$$"
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$out"' EXIT
tmux new-session -d -s "$session" -x 110 -y 24 \
    "$resnets train --out $out/run $* ; sleep 3600"
sleep "$seconds"
tmux capture-pane -p -t "$session" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'  # the screen, without its blank tail
