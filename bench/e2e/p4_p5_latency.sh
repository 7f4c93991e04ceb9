#!/usr/bin/env bash
# P4: demand -> backend create call, and P5: a fresh agent's hello -> its first task running,
# both from the server's own steady-clock timestamps (debug log lines, microseconds; the same
# values feed tidepool_scale_up_latency_seconds and tidepool_worker_first_task_seconds).
# Each run: one `vrun true` on a pool scaled to zero (it waits for its task), then wait until the
# worker has been released again. CLIENT=vbatch submits with `vbatch true` and waits with
# `tidepool task wait` instead: that waiting client starts (≈ 6 ms of CPU loading gRPC) exactly
# while the fresh agent says hello and starts the task, and on two cores it is measured with them
# (P5 median 5-7 ms that way against ~2 ms, 2026-11-23). The pool's create rate limit (default
# 2/s) is lifted: runs follow each other faster than that, and P4 is the path to the create call,
# not the limiter's wait.
#   bench/e2e/p4_p5_latency.sh      RUNS=30
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-30}"
bench_need "$TIDEPOOL" "$VBATCH" "$VRUN"
bench_workdir
trap bench_cleanup EXIT
bench_start_server "agent_pools:
  - name: cold
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 1
      max_idle_agents: 0
      create_rate: \"1000/s\"" --log-level debug
export TIDEPOOL_SERVER="$SERVER_ADDR"
for ((i = 0; i < RUNS; i++)); do
  e2e_wait_pool cold "sum(p['workers'].values()) == 0" 60
  if [ "${CLIENT:-vrun}" = vbatch ]; then
    id=$("$VBATCH" true)
    e2e_wait_task "$id" 60 >/dev/null
  else
    "$VRUN" true >/dev/null
  fi
done
e2e_header "p4_p5_latency"
log="$BENCH_WORK/server.log"
printf '%-40s %s\n' "P4 demand -> create call (ms):" \
  "$(sed -n 's/.*create call \([0-9]*\) us after demand.*/\1/p' "$log" | awk '{printf "%.3f\n", $1/1000}' | e2e_stats)"
printf '%-40s %s\n' "P5 hello -> first task running (ms):" \
  "$(sed -n 's/.*first task running \([0-9]*\) us after its hello.*/\1/p' "$log" | awk '{printf "%.3f\n", $1/1000}' | e2e_stats)"
