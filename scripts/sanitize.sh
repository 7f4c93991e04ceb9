#!/usr/bin/env bash
# Builds the whole project under a sanitizer and runs the whole test suite there.
#
#   scripts/sanitize.sh address [CTEST_ARGS...]   ASan + UBSan (+ LeakSanitizer) in ./build-asan
#   scripts/sanitize.sh thread  [CTEST_ARGS...]   TSan in ./build-tsan (scripts/tsan.supp)
#
# Compiler: the project's own (g++ 12; CC/CXX override), RelWithDebInfo (-O2 -g) with
# -fno-omit-frame-pointer: fast enough for the integration tests, and stacks are still readable.
# Benchmarks are not built. Installs nothing itself.
#
# How a report fails the run, wherever it happens. The integration tests start the real
# `tidepool` binary (server, agents, CLI), which is sanitized too and inherits this environment;
# a report in a server or an agent would otherwise only land in a log file of a temp dir that a
# passing test deletes. So:
#   1. Every sanitized process writes its reports to REPORTS/<kind>.<pid> (the sanitizers'
#      log_path), never only to a stderr nobody reads. REPORTS is build-<kind>/sanitizer-reports,
#      emptied before the run.
#   2. halt_on_error=1: the first report ends the process with a non-zero exit code, so the test
#      that ran it (or whose server it was) usually fails too, close to the cause.
#   3. After ctest, every file in REPORTS is scanned for "ERROR: AddressSanitizer",
#      "ERROR: LeakSanitizer", "runtime error:" (UBSan) and "WARNING: ThreadSanitizer"; any hit fails
#      the run and the reports are printed, whatever ctest said.
# TSan only: scripts/tsan.supp silences races inside Debian's uninstrumented gRPC/abseil/protobuf
# (each entry says why); nothing of ours is suppressed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KIND="${1:-}"
case "$KIND" in
  address) BUILD_DIR="${BUILD_DIR:-build-asan}" ;;
  thread) BUILD_DIR="${BUILD_DIR:-build-tsan}" ;;
  *) echo "usage: $0 address|thread [ctest args...]" >&2; exit 2 ;;
esac
shift
JOBS="${JOBS:-2}"
BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"

t0=$(date +%s)
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DTIDEPOOL_SANITIZE="$KIND" \
    -DTIDEPOOL_BUILD_BENCH=OFF ${CMAKE_ARGS:-}
fi
# Test discovery runs the test binaries at build time: no leak check there (nothing has run yet).
ASAN_OPTIONS=detect_leaks=0 TSAN_OPTIONS="suppressions=$ROOT/scripts/tsan.supp" \
  cmake --build "$BUILD_DIR" -j "$JOBS"
t1=$(date +%s)
echo "sanitize($KIND): build took $((t1 - t0)) s"

REPORTS="$ROOT/$BUILD_DIR/sanitizer-reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
common="halt_on_error=1:print_stacktrace=1:symbolize=1"
if [ "$KIND" = address ]; then
  export ASAN_OPTIONS="$common:log_path=$REPORTS/asan:detect_leaks=1:abort_on_error=0:strict_init_order=1:check_initialization_order=1"
  export UBSAN_OPTIONS="$common:log_path=$REPORTS/ubsan"
  unset TSAN_OPTIONS || true
else
  # history_size=7 (the most): a suppression can only match a stack TSan can still restore, and
  # the descriptor-number entry of tsan.supp needs the older access's stack (the accept4).
  export TSAN_OPTIONS="$common:log_path=$REPORTS/tsan:suppressions=$ROOT/scripts/tsan.supp:second_deadlock_stack=1:exitcode=66:history_size=7"
  unset ASAN_OPTIONS UBSAN_OPTIONS || true
fi

rc=0
(cd "$BUILD_DIR" && ctest -j "${TEST_JOBS:-2}" --output-on-failure --timeout "${TEST_TIMEOUT:-900}" "$@") || rc=$?
t2=$(date +%s)
echo "sanitize($KIND): tests took $((t2 - t1)) s (ctest exit $rc)"

pattern='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|ThreadSanitizer: (reported|lock-order|data race|heap-use-after-free|signal)'
found=0
for f in "$REPORTS"/*; do
  [ -e "$f" ] || continue
  if grep -qE "$pattern" "$f"; then
    found=$((found + 1))
    echo "================ sanitizer report: $f" >&2
    cat "$f" >&2
  fi
done
if [ "$found" -gt 0 ]; then
  echo "sanitize($KIND): FAILED: $found process(es) reported (files in $REPORTS)" >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "sanitize($KIND): FAILED: ctest exit $rc (no sanitizer report file; see the output above)" >&2
  exit "$rc"
fi
echo "sanitize($KIND): no sanitizer reports; total $((t2 - t0)) s"
