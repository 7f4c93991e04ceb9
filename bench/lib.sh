# Helpers shared by the bench scripts (sourced, not run).
#
# Expects ROOT (the source tree) to be set; BUILD_DIR (default build) may be set by the caller.
# Every helper that starts a process records its pid so bench_cleanup can stop exactly it.

BUILD_DIR="${BUILD_DIR:-build}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
TIDEPOOL="${TIDEPOOL:-$BUILD_DIR/src/tidepool}"
AGENT_LOAD="$BUILD_DIR/bench/tidepool-agent-load"
CLK_TCK="$(getconf CLK_TCK)"

BENCH_PIDS=()
BENCH_WORK=""

bench_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

bench_need() {
  for f in "$@"; do [ -x "$f" ] || bench_die "$f is missing: build first (./scripts/build.sh)"; done
}

# A scratch directory, removed on exit unless KEEP=1.
bench_workdir() {
  BENCH_WORK="$(mktemp -d "${TMPDIR:-/tmp}/tidepool-bench.XXXXXX")"
}

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
  # Agents the local backend started outlive a stopped server by design (they wait for it to
  # come back); a benchmark's must not outlive the benchmark and load the next one. Killed after
  # the server, which would otherwise replace them; their pids are in the backend's ledgers
  # ("NAME PID START" lines).
  if [ -n "${SERVER_DATA:-}" ] && [ -d "$SERVER_DATA/backends/local" ]; then
    for pid in $(awk '{print $2}' "$SERVER_DATA"/backends/local/*.ledger 2>/dev/null); do
      kill -KILL -- "-$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  if [ -n "$BENCH_WORK" ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$BENCH_WORK"; fi
  if [ -n "$BENCH_WORK" ] && [ "${KEEP:-0}" = 1 ]; then echo "kept $BENCH_WORK" >&2; fi
}

# bench_start_server CONFIG_YAML [extra server flags...]
# Starts `tidepool server` on 127.0.0.1:0 with its own data dir; sets SERVER_PID, SERVER_ADDR,
# SERVER_DATA. SERVER_WRAPPER, if set, prefixes the command and must exec it (e.g.
# "env LD_PRELOAD=..."), so SERVER_PID stays the server's. The open-file limit is raised to the hard limit first (the server keeps one
# descriptor per agent and does not raise it itself).
bench_start_server() {
  local config="$1"; shift
  SERVER_DATA="$BENCH_WORK/data"
  mkdir -p "$SERVER_DATA"
  printf '%s\n' "$config" > "$BENCH_WORK/tidepool.yaml"
  ( ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec ${SERVER_WRAPPER:-} "$TIDEPOOL" server --config "$BENCH_WORK/tidepool.yaml" --data-dir "$SERVER_DATA" \
      --listen 127.0.0.1:0 "$@" > "$BENCH_WORK/server.log" 2>&1 ) &
  SERVER_PID=$!
  BENCH_PIDS+=("$SERVER_PID")
  for _ in $(seq 1 300); do
    if [ -s "$SERVER_DATA/server.addr" ]; then
      SERVER_ADDR="$(head -n1 "$SERVER_DATA/server.addr")"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$BENCH_WORK/server.log" >&2; bench_die "the server exited"; }
    sleep 0.1
  done
  cat "$BENCH_WORK/server.log" >&2
  bench_die "the server did not report its address within 30 s"
}

# utime+stime of a process, in clock ticks.
bench_ticks() {
  # Field 2 (comm) may contain spaces: cut everything up to the last ')'.
  local stat
  stat="$(cat "/proc/$1/stat")" || return 1
  stat="${stat##*) }"
  # After comm: state(3) ppid(4) ... utime(14) stime(15) -> positions 12 and 13 here.
  awk '{print $12 + $13}' <<< "$stat"
}

# A /proc/PID/status field in kB (VmRSS, VmHWM, RssAnon, RssFile, ...), or Threads.
bench_status() {
  awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"
}

bench_now() { date +%s.%N; }

# bench_cpu_percent TICKS0 TICKS1 T0 T1 -> percent of one core.
bench_cpu_percent() {
  awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) * 100 }'
}

bench_mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# On-CPU nanoseconds of all of a process's threads (from /proc/PID/task/*/schedstat): finer than
# clock ticks, for figures near zero. Threads that exited are not counted.
bench_cpu_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'
}

# bench_ns_percent NS0 NS1 T0 T1 -> percent of one core.
bench_ns_percent() {
  awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" 'BEGIN { printf "%.3f", (b - a) / 1e9 / (t1 - t0) * 100 }'
}
