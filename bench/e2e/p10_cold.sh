#!/usr/bin/env bash
# P10: cold start. A pool scaled to zero whose backend boots a VM in BOOT_DELAY seconds (vm.sh,
# the same simulation as the Slurm peer's cloud partition); `vrun true` wall time, and the
# overhead beyond the boot delay. Each run waits for the pool to be back at zero first.
#   bench/e2e/p10_cold.sh           BOOT_DELAY=2 RUNS=5
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BOOT_DELAY="${BOOT_DELAY:-2}"
RUNS="${RUNS:-5}"
bench_need "$TIDEPOOL" "$VRUN"
bench_workdir
# A VM may be stopping (its pid file going) while this runs: nothing here may fail the script.
trap 'for f in "$BENCH_WORK"/vms/*.pid; do pid=$(cat "$f" 2>/dev/null) && kill -KILL -- "-$pid" 2>/dev/null; done; bench_cleanup' EXIT
mkdir -p "$BENCH_WORK/vms"
call="VM_DIR=$BENCH_WORK/vms BOOT_DELAY=$BOOT_DELAY TIDEPOOL_BIN=$TIDEPOOL $ROOT/bench/e2e/vm.sh"
bench_start_server "agent_pools:
  - name: cloud
    default: true
    auto_scaler:
      backend:
        command:
          start: \"$call start\"
          stop: \"$call stop \${WORKER_NAME}\"
          list: \"$call list\"
      max_agents: 1
      max_idle_agents: 0
      sync_loop_interval: \"2s\""
export TIDEPOOL_SERVER="$SERVER_ADDR"
samples=()
for ((i = 0; i < RUNS; i++)); do
  e2e_wait_pool cloud "sum(p['workers'].values()) == 0" 60
  t0="${EPOCHREALTIME/./}"
  "$VRUN" true >/dev/null 2>&1
  t1="${EPOCHREALTIME/./}"
  samples+=("$((t1 - t0))")
done
e2e_header "p10_cold"
printf '%-40s %s\n' "cold vrun true, boot ${BOOT_DELAY}s (ms):" "$(printf '%s\n' "${samples[@]}" | awk '{printf "%.1f\n", $1/1000}' | e2e_stats)"
printf '%-40s %s\n' "overhead beyond the boot (ms):" \
  "$(printf '%s\n' "${samples[@]}" | awk -v b="$BOOT_DELAY" '{printf "%.1f\n", $1/1000 - b*1000}' | e2e_stats)"
