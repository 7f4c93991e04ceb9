#!/usr/bin/env bash
# P11: log throughput: one `vbatch` task writing SIZE_MB MiB to stdout; stored MB/s (submit to
# final, every byte in the task's log) and `task logs` read-back MB/s; the byte counts must match.
#   bench/e2e/p11_logs.sh           SIZE_MB=1024
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SIZE_MB="${SIZE_MB:-1024}"
bench_need "$TIDEPOOL" "$VBATCH"
bench_workdir
trap bench_cleanup EXIT
bench_start_server "agent_pools:
  - name: one
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 1
      min_agents: 1
      idle_decay: \"1h\""
e2e_wait_pool one "p['idle_slots'] >= 1"
export TIDEPOOL_SERVER="$SERVER_ADDR"
bytes=$((SIZE_MB * 1024 * 1024))
t0="${EPOCHREALTIME/./}"
id=$("$VBATCH" head -c "$bytes" /dev/zero)
state=$(e2e_wait_task "$id" 1200)
t1="${EPOCHREALTIME/./}"
stored=$(tp task logs "$id" | wc -c)
t2="${EPOCHREALTIME/./}"
e2e_header "p11_logs"
awk -v b="$bytes" -v s="$stored" -v w="$((t1 - t0))" -v r="$((t2 - t1))" -v st="$state" \
  'BEGIN { printf "%d MiB stdout: stored in %.2f s = %.0f MB/s; read back %d bytes in %.2f s = %.0f MB/s; %s; lost bytes: %d\n", b/1048576, w/1e6, b/1e6/(w/1e6), s, r/1e6, s/1e6/(r/1e6), st, b - s }'
[ "$stored" -eq "$bytes" ] || bench_die "stored $stored bytes of $bytes"
