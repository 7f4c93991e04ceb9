#!/bin/bash
# A Velda-style provisioning script for command backend tests, used as
#   start: "STATE=DIR provision.sh start"
#   stop:  "STATE=DIR provision.sh stop ${WORKER_NAME}"
#   list:  "STATE=DIR provision.sh list"
# A "worker" is a file DIR/NAME holding its status; nothing real is started.
set -eu
: "${STATE:?STATE must name a directory}"
mkdir -p "$STATE"
case "${1:-}" in
  start)
    name="$TIDEPOOL_POOL-$(date +%s%N)-$$"
    echo running > "$STATE/$name"
    echo "provisioning $name" >&2
    echo "$name"
    ;;
  stop)
    [ -n "${2:-}" ] || { echo "stop: no worker name" >&2; exit 2; }
    [ -e "$STATE/$2" ] || { echo "stop: no such worker: $2" >&2; exit 1; }
    echo stopped > "$STATE/$2"
    ;;
  list)
    for f in "$STATE"/*; do
      if [ -e "$f" ]; then echo "$(basename "$f") $(cat "$f")"; fi
    done
    ;;
  *)
    echo "usage: $0 start|stop NAME|list" >&2
    exit 2
    ;;
esac
