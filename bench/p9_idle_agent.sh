#!/usr/bin/env bash
# P9 — idle agent footprint.
#
# Starts a server with one static pool and one real `tidepool agent` joined to it by hand (which,
# with no TLS asked for, execs `tidepool-agent` beside it: the same pid, no gRPC in it),
# waits until it is connected and settled, then samples the AGENT process over a window:
# RSS (VmRSS, and its anon / file / shmem parts), CPU (utime+stime from /proc/PID/stat, and the
# finer per-thread schedstat sum), threads, and what the resident memory is made of
# (/proc/PID/smaps_rollup: private vs shared; /proc/PID/smaps grouped by mapping).
#
# Usage: bench/p9_idle_agent.sh [WINDOW_SECONDS]       (default 60)
# Environment: SETTLE=5 (seconds after the welcome before sampling), HEARTBEAT=5s (server's
#   --heartbeat-interval), BUILD_DIR=build, KEEP=1 keeps the scratch directory.
# Target (performance.md): RSS <= 10 MB, CPU ~ 0.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/bench/lib.sh"

WINDOW="${1:-60}"
SETTLE="${SETTLE:-5}"
HEARTBEAT="${HEARTBEAT:-5s}"

bench_need "$TIDEPOOL"
bench_workdir
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_start_server "agent_pools:
  - name: hand
    default: true" --heartbeat-interval "$HEARTBEAT"
TOKEN="$("$TIDEPOOL" pool join-token hand --data-dir "$SERVER_DATA")"

mkdir -p "$BENCH_WORK/agent-work"
"$TIDEPOOL" agent --server "$SERVER_ADDR" --pool hand --name idle-0 --token "$TOKEN" \
  --work-dir "$BENCH_WORK/agent-work" > "$BENCH_WORK/agent.log" 2>&1 &
AGENT_PID=$!
BENCH_PIDS=("$AGENT_PID" "${BENCH_PIDS[@]}")
for _ in $(seq 1 300); do
  grep -q "connected to" "$BENCH_WORK/agent.log" 2>/dev/null && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$BENCH_WORK/agent.log" >&2; bench_die "the agent exited"; }
  sleep 0.1
done
grep -q "connected to" "$BENCH_WORK/agent.log" || bench_die "the agent did not connect within 30 s"
sleep "$SETTLE"

k0="$(bench_ticks "$AGENT_PID")"; n0="$(bench_cpu_ns "$AGENT_PID")"; t0="$(bench_now)"
RSS_MIN=""; RSS_MAX=0
end=$(( $(date +%s) + WINDOW ))
while [ "$(date +%s)" -lt "$end" ]; do
  r="$(bench_status "$AGENT_PID" VmRSS)"
  [ "$r" -gt "$RSS_MAX" ] && RSS_MAX="$r"
  if [ -z "$RSS_MIN" ] || [ "$r" -lt "$RSS_MIN" ]; then RSS_MIN="$r"; fi
  sleep 1
done
k1="$(bench_ticks "$AGENT_PID")"; n1="$(bench_cpu_ns "$AGENT_PID")"; t1="$(bench_now)"
kill -0 "$AGENT_PID" 2>/dev/null || bench_die "the agent died during the window"

S() { bench_status "$AGENT_PID" "$1"; }
R() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$AGENT_PID/smaps_rollup"; }
echo "P9 window                $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (after ${SETTLE}s settle; heartbeat $HEARTBEAT)"
echo "P9 agent RSS             $(bench_mb "$(S VmRSS)") MB  (min $(bench_mb "$RSS_MIN"), max $(bench_mb "$RSS_MAX") in window; VmHWM $(bench_mb "$(S VmHWM)") MB)"
echo "P9   RssAnon / RssFile / RssShmem   $(bench_mb "$(S RssAnon)") / $(bench_mb "$(S RssFile)") / $(bench_mb "$(S RssShmem)") MB"
echo "P9   Private clean+dirty           $(bench_mb "$(( $(R Private_Clean) + $(R Private_Dirty) ))") MB  (dirty $(bench_mb "$(R Private_Dirty)") MB)"
echo "P9   Shared clean+dirty            $(bench_mb "$(( $(R Shared_Clean) + $(R Shared_Dirty) ))") MB"
echo "P9   Pss                           $(bench_mb "$(R Pss)") MB"
echo "P9 agent CPU             $(bench_cpu_percent "$k0" "$k1" "$t0" "$t1") % of a core  (ticks $((k1 - k0)); schedstat $(bench_ns_percent "$n0" "$n1" "$t0" "$t1") %, $(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }') ms on CPU)"
echo "P9 agent program         $(readlink "/proc/$AGENT_PID/exe")"
echo "P9 agent threads         $(S Threads)   VmSize $(bench_mb "$(S VmSize)") MB"
echo "P9 resident by mapping (kB: Rss, Private, Shared), top 12:"
awk '
  /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anon]" : $6; next }
  $1 == "Rss:" { rss[name] += $2 }
  $1 == "Private_Clean:" || $1 == "Private_Dirty:" { priv[name] += $2 }
  $1 == "Shared_Clean:" || $1 == "Shared_Dirty:" { shr[name] += $2 }
  END { for (n in rss) if (rss[n] > 0) printf "%8d %8d %8d  %s\n", rss[n], priv[n], shr[n], n }
' "/proc/$AGENT_PID/smaps" | sort -k1 -n -r | head -12 | sed 's/^/P9   /'
