#!/usr/bin/env bash
# P3: trivial-task completion throughput: N `true` tasks (one `vbatch -N N true`: N shards) on
# 2 workers x 8 slots that are already up; from the submit to every shard final.
#   bench/e2e/p3_throughput.sh      N=10000
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N="${N:-10000}"
bench_need "$TIDEPOOL" "$VBATCH"
bench_workdir
trap bench_cleanup EXIT
bench_start_server "agent_pools:
  - name: two
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 2
      min_agents: 2
      default_slots_per_agent: 8
      idle_decay: \"1h\""
e2e_wait_pool two "p['idle_slots'] >= 16"
export TIDEPOOL_SERVER="$SERVER_ADDR"
t0="${EPOCHREALTIME/./}"
id=$("$VBATCH" -N "$N" true)
ts="${EPOCHREALTIME/./}"
state=$(e2e_wait_task "$id" 1200)
t1="${EPOCHREALTIME/./}"
ok=$(e2e_list_all --parent "$id" --state SUCCESS | grep -c . || true)
e2e_header "p3_throughput"
awk -v n="$N" -v us="$((t1 - t0))" -v submit_us="$((ts - t0))" -v ok="$ok" -v st="$state" \
  'BEGIN { printf "%d true tasks on 2x8 slots: submit %.3f s, all final %.2f s after submit = %.1f tasks/s (parent %s, %d shards SUCCESS)\n", n, submit_us/1e6, us/1e6, n/(us/1e6), st, ok }'
