#!/usr/bin/env bash
# P8 — connected agents per server.
#
# Starts a server with one static pool, holds N agent streams against it with
# tidepool-agent-load (one TCP connection per agent speaking the fast protocol as tidepool-agent
# does, or with PROTOCOL=grpc one gRPC channel each as `tidepool agent` with TLS; a join token,
# distinct names, heartbeats at the server's interval, keepalive like the real agent), and samples
# the SERVER process: RSS (/proc/PID/status VmRSS) and CPU (/proc/PID/stat utime+stime) over a
# steady window while only heartbeats flow.
#
# Usage: bench/p8_agents.sh [N]                        (N default 10000)
# Environment:
#   WINDOW=30        seconds of the steady window
#   SETTLE=10        seconds to wait after the last welcome before the window opens
#   HEARTBEAT=5s     the server's --heartbeat-interval (agents beat at what the Welcome says)
#   BEAT_MS=         agents beat this often whatever the server asks (default: as the server asks,
#                    which lengthens with the number connected; a fixed rate compares protocols)
#   PROTOCOL=fast    the agents' transport: fast (tidepool-agent) or grpc
#   KEEPALIVE_MS=60000  keepalive per connection, as the agent sets it (TCP or HTTP/2; 0 = off)
#   BASELINE=5       seconds of idle-server CPU sampled before the agents connect (0 = skip)
#   BUILD_DIR=build  KEEP=1 keeps the scratch directory (server log, load generator output)
# Targets (performance.md): 10,000 held, server RSS <= 400 MB, heartbeat CPU < 5% of a core.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/bench/lib.sh"

N="${1:-10000}"
WINDOW="${WINDOW:-30}"
SETTLE="${SETTLE:-10}"
HEARTBEAT="${HEARTBEAT:-5s}"
KEEPALIVE_MS="${KEEPALIVE_MS:-60000}"
PROTOCOL="${PROTOCOL:-fast}"
BEAT_MS="${BEAT_MS:-0}"
BASELINE="${BASELINE:-5}"

bench_need "$TIDEPOOL" "$AGENT_LOAD"
bench_workdir
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_start_server "agent_pools:
  - name: load
    default: true" --heartbeat-interval "$HEARTBEAT"
TOKEN="$("$TIDEPOOL" pool join-token load --data-dir "$SERVER_DATA")"

sleep 1
RSS_IDLE="$(bench_status "$SERVER_PID" VmRSS)"
CPU_IDLE="n/a"
if [ "$BASELINE" != 0 ]; then
  k0="$(bench_ticks "$SERVER_PID")"; t0="$(bench_now)"
  sleep "$BASELINE"
  k1="$(bench_ticks "$SERVER_PID")"; t1="$(bench_now)"
  CPU_IDLE="$(bench_cpu_percent "$k0" "$k1" "$t0" "$t1")"
fi

echo "p8: server $SERVER_ADDR (pid $SERVER_PID), idle RSS $(bench_mb "$RSS_IDLE") MB; connecting $N agents..." >&2
( ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  exec "$AGENT_LOAD" --server "$SERVER_ADDR" --pool load --token "$TOKEN" -n "$N" --duration 0 \
    --protocol "$PROTOCOL" --heartbeat-ms "$BEAT_MS" --keepalive-ms "$KEEPALIVE_MS" --ready-file "$BENCH_WORK/ready" ) \
  > "$BENCH_WORK/load.out" 2> "$BENCH_WORK/load.err" &
LOAD_PID=$!
BENCH_PIDS=("$LOAD_PID" "${BENCH_PIDS[@]}")

while [ ! -e "$BENCH_WORK/ready" ]; do
  kill -0 "$LOAD_PID" 2>/dev/null || { cat "$BENCH_WORK/load.err" >&2; bench_die "the load generator exited early"; }
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 50 "$BENCH_WORK/server.log" >&2; bench_die "the server died"; }
  sleep 0.2
done
RSS_RAMPED="$(bench_status "$SERVER_PID" VmRSS)"
echo "p8: $(cat "$BENCH_WORK/ready") after ramp; settling ${SETTLE}s, then a ${WINDOW}s window" >&2
sleep "$SETTLE"

k0="$(bench_ticks "$SERVER_PID")"; n0="$(bench_cpu_ns "$SERVER_PID")"; t0="$(bench_now)"
lk0="$(bench_ticks "$LOAD_PID")"
RSS_MAX=0
end=$(( $(date +%s) + WINDOW ))
while [ "$(date +%s)" -lt "$end" ]; do
  r="$(bench_status "$SERVER_PID" VmRSS)"
  [ "$r" -gt "$RSS_MAX" ] && RSS_MAX="$r"
  sleep 1
done
k1="$(bench_ticks "$SERVER_PID")"; n1="$(bench_cpu_ns "$SERVER_PID")"; t1="$(bench_now)"
lk1="$(bench_ticks "$LOAD_PID")"
RSS_END="$(bench_status "$SERVER_PID" VmRSS)"
HWM="$(bench_status "$SERVER_PID" VmHWM)"
ANON="$(bench_status "$SERVER_PID" RssAnon)"
THREADS="$(bench_status "$SERVER_PID" Threads)"
FDS="$(ls "/proc/$SERVER_PID/fd" | wc -l)"
CPU="$(bench_cpu_percent "$k0" "$k1" "$t0" "$t1")"
CPU_NS="$(bench_ns_percent "$n0" "$n1" "$t0" "$t1")"
LOAD_CPU="$(bench_cpu_percent "$lk0" "$lk1" "$t0" "$t1")"

kill -INT "$LOAD_PID"
LOAD_RC=0
wait "$LOAD_PID" || LOAD_RC=$?
BENCH_PIDS=("${BENCH_PIDS[@]:1}")
cat "$BENCH_WORK/load.out" | sed 's/^/load: /'
kill -0 "$SERVER_PID" 2>/dev/null || bench_die "the server died during the run"

get() { awk -v k="$1" '$1 == k {print $2}' "$BENCH_WORK/load.out"; }
ACCEPTED="$(get agents_accepted)"; ACCEPTED="${ACCEPTED:-0}"
HELD="$(get agents_connected_at_end)"; HELD="${HELD:-0}"
PER_AGENT_KB="n/a"
if [ "$ACCEPTED" -gt 0 ]; then
  PER_AGENT_KB="$(awk -v a="$RSS_END" -v b="$RSS_IDLE" -v n="$ACCEPTED" 'BEGIN { printf "%.1f", (a - b) / n }')"
fi
echo "P8 agents requested           $N  (protocol $PROTOCOL)"
echo "P8 agents accepted (welcome)  $ACCEPTED"
echo "P8 agents held at the end     $HELD"
echo "P8 ramp (all welcomed)        $(get ramp_seconds) s"
echo "P8 hold                       $(get hold_seconds) s (window ${WINDOW}s after ${SETTLE}s settle)"
echo "P8 heartbeat interval         $HEARTBEAT  (heartbeats sent $(get heartbeats_sent), skipped $(get heartbeats_skipped))"
echo "P8 server RSS idle            $(bench_mb "$RSS_IDLE") MB"
echo "P8 server RSS after ramp      $(bench_mb "$RSS_RAMPED") MB"
echo "P8 server RSS end of window   $(bench_mb "$RSS_END") MB  (max in window $(bench_mb "$RSS_MAX") MB, peak VmHWM $(bench_mb "$HWM") MB, anon $(bench_mb "$ANON") MB)"
echo "P8 server RSS per agent       $PER_AGENT_KB kB  ((RSS end - RSS idle) / accepted)"
echo "P8 server CPU in window       $CPU % of a core  (schedstat: $CPU_NS %; idle server: $CPU_IDLE %)"
echo "P8 server threads / fds       $THREADS / $FDS"
echo "P8 load generator CPU         $LOAD_CPU % of a core (same machine)"
[ "$LOAD_RC" = 0 ] || { echo "p8: the load generator reports failures (exit $LOAD_RC)" >&2; exit 1; }
