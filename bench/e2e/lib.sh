# Helpers for the end-to-end benchmarks (sourced). Built on ../lib.sh (server start, cleanup).
# Timing follows ../../../shared/bench/slurm exactly, so the two sides compare: wall time of the
# whole client process from bash's $EPOCHREALTIME, statistics as its sb_stats prints them.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=../lib.sh
source "$ROOT/bench/lib.sh"
VRUN="${VRUN:-$BUILD_DIR/src/vrun}"
VBATCH="${VBATCH:-$BUILD_DIR/src/vbatch}"

# stdin: one number per line -> "n=.. min=.. median=.. p90=.. max=.. mean=.." (sb_stats' format)
e2e_stats() {
  sort -n | awk '{a[NR]=$1; s+=$1}
    END {
      if (NR == 0) { print "no samples"; exit 1 }
      p50 = a[int((NR + 1) / 2)]; if (NR % 2 == 0) p50 = (a[NR/2] + a[NR/2 + 1]) / 2
      i90 = int(0.9 * NR + 0.999999); if (i90 < 1) i90 = 1; if (i90 > NR) i90 = NR
      i99 = int(0.99 * NR + 0.999999); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
      printf "n=%d min=%.3f median=%.3f p90=%.3f p99=%.3f max=%.3f mean=%.3f\n", NR, a[1], p50, a[i90], a[i99], a[NR], s / NR
    }'
}

# The CLI against the bench server.
tp() { TIDEPOOL_SERVER="$SERVER_ADDR" "$TIDEPOOL" "$@"; }
# The system's python: a version manager's shim in PATH (pyenv here) costs tens of ms per call.
PYTHON="$(command -v /usr/bin/python3 || command -v python3)"

# e2e_wait POOL JQ-LIKE-PYTHON-EXPR TIMEOUT_S: until `pool get POOL --json` satisfies the python
# expression over `p` (e.g. "p['idle_slots'] >= 8").
e2e_wait_pool() {
  local pool="$1" expr="$2" timeout="${3:-60}" deadline=$((SECONDS + ${3:-60}))
  while ((SECONDS < deadline)); do
    if tp pool get "$pool" --json 2>/dev/null | $PYTHON -c "import json,sys; p=json.load(sys.stdin); sys.exit(0 if ($expr) else 1)"; then
      return 0
    fi
    sleep 0.1
  done
  tp pool get "$pool" --json >&2 || true
  bench_die "pool $pool: '$expr' not true within ${timeout}s"
}

# e2e_wait_task ID TIMEOUT_S: until the task is final; prints its state. Blocks on `task wait`
# (the server pushes the end) rather than polling: a poll loop of CLI and python processes at
# 20 Hz took a quarter of the machine's CPU during P11 and skewed P3 the same way.
e2e_wait_task() {
  local id="$1" state
  TIDEPOOL_SERVER="$SERVER_ADDR" timeout "${2:-600}" "$TIDEPOOL" task wait "$id" >/dev/null 2>&1 || true
  state=$(tp task get "$id" --json 2>/dev/null | $PYTHON -c "import json,sys; print(json.load(sys.stdin).get('state',''))")
  case "$state" in SUCCESS|FAILURE|CANCELLED) echo "$state"; return 0 ;; esac
  bench_die "task $id not final within ${2:-600}s (state: $state)"
}

# Every task `tidepool task list ARGS` shows, one JSON object a line: `task list` pages (newest
# first), so walk the pages, each --after the last id of the one before.
e2e_list_all() {
  local after=() page last
  while :; do
    page=$(tp task list --json --limit 1000 "$@" "${after[@]}" 2>/dev/null)
    last=$($PYTHON -c "import json,sys; p=json.load(sys.stdin); print(p[-1]['id'] if p else '')" <<<"$page")
    $PYTHON -c "import json,sys; [print(json.dumps(t)) for t in json.load(sys.stdin)]" <<<"$page"
    [ -n "$last" ] || break
    after=(--after "$last")
  done
}

e2e_header() {
  echo "# $1: $(date -u +%FT%TZ), host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
}
