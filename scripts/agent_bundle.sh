#!/usr/bin/env bash
# agent_bundle.sh AGENT OUTDIR: the agent and every shared library it needs except glibc's, so it
# runs on any x86-64 Linux host whose glibc is at least NEEDS (the newest GLIBC_ symbol version
# any file of the bundle asks for). The agent finds lib/ through its RPATH ($ORIGIN/lib).
#   OUTDIR/tidepool-agent, OUTDIR/lib/*.so*, OUTDIR/NEEDS, OUTDIR/MANIFEST, OUTDIR/VERSION
set -euo pipefail
agent=$1
out=$2
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/lib"
cp "$agent" "$tmp/tidepool-agent"
strip --strip-debug "$tmp/tidepool-agent"  # what is copied to hosts: no debug info
ldd "$agent" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*) ;;  # glibc's own
    *) cp -L "$lib" "$tmp/lib/" ;;
  esac
done
objdump -T "$tmp/tidepool-agent" "$tmp"/lib/* | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1 > "$tmp/NEEDS"
(cd "$tmp" && sha256sum tidepool-agent lib/* NEEDS > MANIFEST && sha256sum MANIFEST | cut -c1-64 > VERSION)
rm -rf "$out"
mv "$tmp" "$out"
