#!/usr/bin/env bash
# P2: `vbatch` submit throughput: N tasks from SUBMITTERS concurrent loops of `vbatch` processes
# (one process per task, like `sbatch` in the Slurm peer); tasks/s acknowledged (an id printed =
# the task is committed to disk). The pool never runs them (max_agents 0), so only submission is
# measured.
#   bench/e2e/p2_submit.sh          N=10000 SUBMITTERS=4
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N="${N:-10000}"
SUBMITTERS="${SUBMITTERS:-4}"
bench_need "$TIDEPOOL" "$VBATCH"
bench_workdir
trap bench_cleanup EXIT
bench_start_server "agent_pools:
  - name: parked
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 0"
export TIDEPOOL_SERVER="$SERVER_ADDR"
per=$(( (N + SUBMITTERS - 1) / SUBMITTERS ))
k0="$(bench_ticks "$SERVER_PID")"
t0="${EPOCHREALTIME/./}"
pids=()
for ((s = 0; s < SUBMITTERS; s++)); do
  ( n=$per; [ $(( (s + 1) * per )) -gt "$N" ] && n=$(( N - s * per ))
    for ((i = 0; i < n; i++)); do "$VBATCH" true; done > "$BENCH_WORK/ids.$s" ) &
  pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: the server is a background job too
t1="${EPOCHREALTIME/./}"
k1="$(bench_ticks "$SERVER_PID")"
acked=$(cat "$BENCH_WORK"/ids.* | grep -c . || true)
listed=$(e2e_list_all | $PYTHON -c "import json,sys; print(sum(1 for l in sys.stdin if json.loads(l)['state'] == 'QUEUEING'))")
e2e_header "p2_submit"
awk -v n="$acked" -v us="$((t1 - t0))" -v s="$SUBMITTERS" -v l="$listed" \
  'BEGIN { printf "vbatch x%d submitters: %d tasks acknowledged in %.2f s = %.1f tasks/s (%d listed as QUEUEING)\n", s, n, us/1e6, n/(us/1e6), l }'
awk -v n="$acked" -v k="$((k1 - k0))" -v hz="$CLK_TCK" \
  'BEGIN { if (n > 0) printf "server CPU: %.3f ms per task (user+system, all threads)\n", k / hz * 1000 / n }'
