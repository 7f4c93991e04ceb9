#!/bin/bash
# Stands in for the tidepool binary in command backend tests: `fake-tidepool.sh worker-token NAME`
# prints a token derived from NAME and the data dir, as `tidepool worker-token` would.
set -eu
[ "${1:-}" = worker-token ] || { echo "usage: $0 worker-token NAME" >&2; exit 2; }
[ -n "${2:-}" ] || { echo "worker-token: NAME is required" >&2; exit 2; }
echo "token-for-$2@${TIDEPOOL_DATA_DIR:-none}"
