#!/usr/bin/env bash
# A simulated cloud for P10 (a bench fixture): `start` returns at once with a new VM name, like a
# cloud API call, and the VM "boots" for $BOOT_DELAY seconds in the background before its agent
# starts (as the Slurm peer's cloud_resume.sh does for slurmd). State in $VM_DIR: one pid file per VM.
set -u
: "${VM_DIR:?}"
case "${1:-}" in
  start)
    name="vm-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    token=$($TIDEPOOL_WORKER_TOKEN_FOR "$name")
    # The VM image's agent: tidepool-agent when installed (what `tidepool agent` would exec).
    agent=("$TIDEPOOL_BIN" agent)
    [ -x "$(dirname "$TIDEPOOL_BIN")/tidepool-agent" ] && agent=("$(dirname "$TIDEPOOL_BIN")/tidepool-agent")
    TIDEPOOL_WORKER_NAME=$name TIDEPOOL_WORKER_TOKEN=$token setsid bash -c \
      'sleep "$0"; exec "${@:1}"' "${BOOT_DELAY:-2}" "${agent[@]}" < /dev/null > "$VM_DIR/$name.log" 2>&1 &
    echo $! > "$VM_DIR/$name.pid"
    echo "$name"
    ;;
  stop)
    pid=$(cat "$VM_DIR/$2.pid" 2>/dev/null) && kill -KILL -- "-$pid" 2>/dev/null
    rm -f "$VM_DIR/$2.pid"
    exit 0
    ;;
  list)
    for f in "$VM_DIR"/*.pid; do
      [ -e "$f" ] || continue
      kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f" .pid) running"
    done
    exit 0
    ;;
  *) echo "usage: $0 start|stop NAME|list" >&2; exit 2 ;;
esac
