#!/usr/bin/env bash
# The main job: build and install Tidepool, start a local server (embedded SQLite store, a
# `local` pool whose workers are agent processes on this machine), and run vrun and vbatch
# through it. The server stays up afterwards; `tidepool down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
if [ "$(id -u)" -eq 0 ]; then PREFIX="${PREFIX:-/usr/local}"; else PREFIX="${PREFIX:-$HOME/.local}"; fi
export PATH="$PREFIX/bin:$PATH"
cd "${TMPDIR:-/tmp}"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step tidepool up
tidepool up
step vrun echo "hello from a Tidepool worker"
vrun echo "hello from a Tidepool worker"
step "vrun sh -c 'echo worker=\$TIDEPOOL_WORKER_NAME task=\$TIDEPOOL_TASK_ID; exit 3'; echo exit=\$?"
set +e
vrun sh -c 'echo worker=$TIDEPOOL_WORKER_NAME task=$TIDEPOOL_TASK_ID; exit 3'
echo "exit=$?"
set -e
step "seq 1 5 | vrun sort -rn"
seq 1 5 | vrun sort -rn
step "vbatch sh -c 'for i in 1 2 3; do echo step \$i; sleep 1; done'"
id=$(vbatch sh -c 'for i in 1 2 3; do echo step $i; sleep 1; done')
echo "$id"
step tidepool task logs -f "$id"
tidepool task logs -f "$id"
step "vbatch -f --name demo sh -c 'echo batch output; echo to stderr >&2'"
vbatch -f --name demo sh -c 'echo batch output; echo to stderr >&2'
step tidepool task list
tidepool task list
step tidepool pool list
tidepool pool list
step tidepool worker list
tidepool worker list
printf '\nThe server is still running; idle workers leave after idle_decay (60s). Stop it with: tidepool down\n'
