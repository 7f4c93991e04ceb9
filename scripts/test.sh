#!/usr/bin/env bash
# Builds Tidepool and runs the whole test suite (unit + integration) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
BUILD_DIR="${BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "${TEST_JOBS:-2}" --timeout 600 "$@"
