#!/usr/bin/env bash
# P1: warm `vrun true`, wall time of the whole client process, on a pool with an idle worker.
# Same method as the Slurm peer's bench_srun.sh (WARMUP runs, then RUNS timed with $EPOCHREALTIME).
#   bench/e2e/p1_vrun.sh            RUNS=50 WARMUP=3 by default
#   VRUN_B=build/src/tidepool-vrun bench/e2e/p1_vrun.sh
#                                   A/B: alternates each run with another client, prints both
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-3}"
bench_need "$TIDEPOOL" "$VRUN"
bench_workdir
trap bench_cleanup EXIT
bench_start_server "agent_pools:
  - name: warm
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 1
      min_agents: 1
      min_idle_agents: 1
      idle_decay: \"1h\""
e2e_wait_pool warm "p['idle_slots'] >= 1"
export TIDEPOOL_SERVER="$SERVER_ADDR"
for ((i = 0; i < WARMUP; i++)); do "$VRUN" true >/dev/null; done
samples=()
VRUN_B="${VRUN_B:-}"
[[ -z "$VRUN_B" ]] || bench_need "$VRUN_B"
samples=()
samples_b=()
for ((i = 0; i < RUNS; i++)); do
  t0="${EPOCHREALTIME/./}"
  "$VRUN" true >/dev/null
  t1="${EPOCHREALTIME/./}"
  samples+=("$((t1 - t0))")
  if [[ -n "$VRUN_B" ]]; then
    t0="${EPOCHREALTIME/./}"
    "$VRUN_B" true >/dev/null
    t1="${EPOCHREALTIME/./}"
    samples_b+=("$((t1 - t0))")
  fi
done
e2e_header "p1_vrun"
printf '%-28s %s\n' "vrun true (ms):" "$(printf '%s\n' "${samples[@]}" | awk '{printf "%.3f\n", $1/1000}' | e2e_stats)"
if [[ -n "$VRUN_B" ]]; then
  printf '%-28s %s\n' "$(basename "$VRUN_B") true (ms):" \
    "$(printf '%s\n' "${samples_b[@]}" | awk '{printf "%.3f\n", $1/1000}' | e2e_stats)"
fi
