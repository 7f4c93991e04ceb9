#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 60); targets default to all:
#                                             fuzz_config fuzz_agent fuzz_client
#
# Needs clang and its runtime (Debian: clang, libclang-rt-14-dev); installs nothing itself.
# Build: ./build-fuzz (clang, ASan+UBSan everywhere via -DTIDEPOOL_SANITIZE=address, the
# project's libraries also instrumented for coverage), tests and benchmarks off.
#
# Each target runs on a copy of its seed corpus (fuzz/corpus/TARGET) in a temp dir, so CI never
# grows the repo's corpus; with FUZZ_KEEP_CORPUS=1 the grown corpus is left in
# build-fuzz/fuzz-corpus/TARGET instead (merge good inputs back by hand with -merge=1).
# Findings (crash-*, leak-*, timeout-*, oom-*) go to build-fuzz/fuzz-artifacts/TARGET/, logs to
# build-fuzz/fuzz-logs/TARGET.log. The script fails if any target found anything, and prints
# the input's path and how to reproduce it (run the target binary on that one file).
#
# Environment: JOBS (build parallelism, default 2), FUZZ_BUILD_DIR (default build-fuzz),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECS="${1:-60}"
if [ $# -gt 0 ]; then shift; fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(fuzz_config fuzz_agent fuzz_client); fi
BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
JOBS="${JOBS:-2}"

for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool not found (run scripts/setup.sh)" >&2; exit 2; }
done

t0=$(date +%s)
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTIDEPOOL_FUZZ=ON -DTIDEPOOL_SANITIZE=address -DTIDEPOOL_BUILD_TESTS=OFF -DTIDEPOOL_BUILD_BENCH=OFF
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"
echo "fuzz: build took $(( $(date +%s) - t0 )) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/tidepool-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The Core fuzzers' scratch dirs (SQLite store, logs) go under here, so a crashed run leaves none behind.
export TIDEPOOL_FUZZ_SCRATCH="$work/scratch"
mkdir -p "$TIDEPOOL_FUZZ_SCRATCH"
# Leaks count as findings; UBSan stops at its first report, like ASan.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:print_stacktrace=1:symbolize=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:symbolize=1:${UBSAN_OPTIONS:-}"

failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/fuzz/$t"
  art="$ROOT/$BUILD_DIR/fuzz-artifacts/$t"
  log="$ROOT/$BUILD_DIR/fuzz-logs/$t.log"
  mkdir -p "$art" "$(dirname "$log")"
  if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
    corpus="$ROOT/$BUILD_DIR/fuzz-corpus/$t"
  else
    corpus="$work/corpus/$t"
  fi
  mkdir -p "$corpus"
  if [ -d "fuzz/corpus/$t" ]; then cp -r "fuzz/corpus/$t/." "$corpus/"; fi
  args=(-max_total_time="$SECS" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1
        -artifact_prefix="$art/")
  if [ -f "fuzz/$t.dict" ]; then args+=(-dict="fuzz/$t.dict"); fi
  # The Core fuzzers' inputs are slow (a fresh Core each) and cover many features; libFuzzer's
  # entropic schedule then spends most of its time updating feature frequencies (5x fewer runs).
  case "$t" in fuzz_agent|fuzz_client) args+=(-entropic=0) ;; esac
  # shellcheck disable=SC2206
  args+=(${FUZZ_ARGS:-})
  echo "fuzz: $t for ${SECS}s (corpus: $(ls "$corpus" | wc -l) seeds; log: $log)"
  start=$(date +%s)
  rc=0
  # The outer timeout only guards against a hang in libFuzzer's own crash/OOM handling.
  timeout -k 30 $((SECS + 300)) "$bin" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  speed=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
  echo "fuzz: $t: rc=$rc, ${took}s, ${execs:-?} runs, ${speed:-?} exec/s; last: ${stats:-?}"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FOUND A PROBLEM; the report:" >&2
    grep -n -m1 -A60 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|==ERROR|deadly signal|SUMMARY:' "$log" >&2 || tail -n 80 "$log" >&2
    grep -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //' | while read -r f; do
      echo "fuzz: crash input: $f" >&2
      echo "fuzz: reproduce with: $BUILD_DIR/fuzz/$t $f" >&2
    done
  fi
done

echo "fuzz: total $(( $(date +%s) - t0 )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
