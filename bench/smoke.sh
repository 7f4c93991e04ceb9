#!/usr/bin/env bash
# The benchmarks in seconds, for CI: checks that everything in bench/ runs, asserts no figure.
#
#   planner_bench, matcher_bench   the 1k sizes only, --benchmark_min_time tiny; a case that
#                                  reports an error (its scenario did not come out as built) fails
#   p8_agents.sh 50                a server, 50 agent streams held for 2 s, all must be welcomed
#                                  and still connected
#   p9_idle_agent.sh 1             one real agent, sampled for 1 s
#   e2e/*.sh                       P1-P5, P10, P11 at tiny sizes
#   spawn_ceiling                  0.2 s each way; every `true` must exit 0
#   backend_bench                  cold vrun on an ssh and a slurm pool, one run each (skips what
#                                  the machine cannot make: namespaces, Slurm)
#
# Usage: bench/smoke.sh            (BUILD_DIR=build; build first with ./scripts/build.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/bench/lib.sh"

bench_need "$BUILD_DIR/bench/planner_bench" "$BUILD_DIR/bench/matcher_bench" "$BUILD_DIR/bench/spawn_ceiling" "$AGENT_LOAD" "$TIDEPOOL"
bench_workdir
trap bench_cleanup EXIT

failed=0
run_gbench() {
  local bin="$1" filter="$2" out="$BENCH_WORK/$(basename "$1").json"
  echo "== $(basename "$bin") (filter $filter)"
  if ! "$BUILD_DIR/bench/$bin" --benchmark_filter="$filter" --benchmark_min_time=0.01 \
      --benchmark_out="$out" --benchmark_out_format=json; then
    echo "smoke: $bin failed" >&2; failed=1; return
  fi
  if ! grep -q '"name"' "$out"; then echo "smoke: $bin ran no benchmark" >&2; failed=1; fi
  if grep -q '"error_occurred": true' "$out"; then echo "smoke: $bin: a case reported an error" >&2; failed=1; fi
}
run_gbench planner_bench '/1000$'
run_gbench matcher_bench '(/n:1000/|/1000$|/667$)'

echo "== p8_agents.sh 50 (2 s)"
for protocol in fast grpc; do
  if ! PROTOCOL=$protocol WINDOW=2 SETTLE=0 BASELINE=0 "$ROOT/bench/p8_agents.sh" 50; then echo "smoke: p8_agents.sh ($protocol) failed" >&2; failed=1; fi
done

echo "== p9_idle_agent.sh 1"
if ! SETTLE=0 "$ROOT/bench/p9_idle_agent.sh" 1; then echo "smoke: p9_idle_agent.sh failed" >&2; failed=1; fi

# The end-to-end figures (bench/e2e), each at a size that takes a second or two.
e2e() {
  echo "== e2e/$*"
  if ! env "${@:2}" "$ROOT/bench/e2e/$1"; then echo "smoke: e2e/$1 failed" >&2; failed=1; fi
}
e2e p1_vrun.sh RUNS=3 WARMUP=1
e2e p2_submit.sh N=20 SUBMITTERS=2
e2e p3_throughput.sh N=100
e2e p4_p5_latency.sh RUNS=2
e2e p10_cold.sh RUNS=1 BOOT_DELAY=0.2
e2e p11_logs.sh SIZE_MB=4

echo "== spawn_ceiling (0.2 s each way)"
for mode in "" --posix; do
  if ! "$BUILD_DIR/bench/spawn_ceiling" --threads 2 --seconds 0.2 $mode; then echo "smoke: spawn_ceiling $mode failed" >&2; failed=1; fi
done

echo "== backend_bench: cold vrun on an ssh and a slurm pool, one run each"
if [ -x "$BUILD_DIR/bench/backend_bench" ]; then
  if ! RUNS=1 "$BUILD_DIR/bench/backend_bench" --gtest_filter='BackendBench.ColdVrunOnSsh:BackendBench.ColdVrunOnSlurm'; then
    echo "smoke: backend_bench failed" >&2; failed=1
  fi
fi

if [ "$failed" != 0 ]; then echo "smoke: FAILED" >&2; exit 1; fi
echo "smoke: ok"
