#!/usr/bin/env bash
# Builds and installs tidepool, vrun and vbatch: into /usr/local/bin as root, else ~/.local/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
if [ "$(id -u)" -eq 0 ]; then PREFIX="${PREFIX:-/usr/local}"; else PREFIX="${PREFIX:-$HOME/.local}"; fi
cmake --install "${BUILD_DIR:-build}" --prefix "$PREFIX" >/dev/null
echo "installed tidepool, tidepool-agent, vrun and vbatch in $PREFIX/bin" >&2
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "add $PREFIX/bin to your PATH" >&2 ;; esac
