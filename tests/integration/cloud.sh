#!/usr/bin/env bash
# A small fake cloud for the command backend's integration tests (it is a test fixture, not a
# provider API). Usage, as the pool's scripts call it:
#   cloud.sh start                 make a "VM" running a Tidepool agent; print its name
#   cloud.sh stop NAME             delete that VM (its whole process group)
#   cloud.sh list                  the VMs that exist: "NAME running"
#   cloud.sh batch COUNT LABEL     COUNT VMs at once, tagged LABEL; their names, one per line
#   cloud.sh vm NAME               (tests) make a VM without an agent, outside any pool
# A VM is a process group: a wrapper shell that runs the agent and stays up after it (a machine
# whose agent crashed is still a machine). State and knobs live in $CLOUD_DIR:
#   ledger      append-only record of every call: "start NAME PID", "stop NAME", "fail", "hang PID" ...
#   fail        if present, start fails with this file's text on stderr
#   hang        if present, start hangs (the backend's timeout must cut it off)
#   no_agent    if present, VMs boot but never run an agent (never connect)
#   list_fail   if present, list fails
#   plan        outcomes for the next starts, one per line (ok|fail|hang), consumed in order;
#               when it runs out, starts succeed (makes a faulty run repeatable from a seed)
#   fail_pct / hang_pct   random faults for start, in percent, when there is no plan
#   concurrency          each start records "begin"/"end" lines around a short sleep
#   slow_return          start answers this many seconds after its VM is up ("returned NAME")
#   stop_ignored         the next stop exits 0 without deleting anything ("stop-ignored NAME")
#   stop_keeps_agent     stops delete the VM but leave its agent process, connected, as a machine
#                        gone without a word leaves its TCP connection ("stop-kept-agent NAME PID")
set -u
: "${CLOUD_DIR:?CLOUD_DIR must be set}"
ledger="$CLOUD_DIR/ledger"
log() { flock "$ledger.lock" -c "echo \"$*\" >> '$ledger'"; }

boot_vm() {  # NAME AGENT(yes|no) [LABEL]
  local name=$1 agent=$2 label=${3:-}
  local token=""
  [ "$agent" = yes ] && token=$($TIDEPOOL_WORKER_TOKEN_FOR "$name")
  if [ "$agent" = yes ]; then
    TIDEPOOL_WORKER_NAME=$name TIDEPOOL_WORKER_TOKEN=$token TIDEPOOL_LABEL=$label \
      setsid bash -c 'tidepool agent ${TIDEPOOL_LABEL:+--label batch=$TIDEPOOL_LABEL} >> "$0.log" 2>&1; exec sleep infinity' \
      "$CLOUD_DIR/$name" < /dev/null > /dev/null 2>&1 &
  else
    setsid bash -c 'exec sleep infinity' < /dev/null > /dev/null 2>&1 &
  fi
  log "start $name $!"
}

case "${1:-}" in
  start)
    [ -e "$CLOUD_DIR/concurrency" ] && { log "begin"; sleep 0.3; log "end"; }
    if [ -e "$CLOUD_DIR/fail" ]; then log "fail"; cat "$CLOUD_DIR/fail" >&2; exit 1; fi
    if [ -e "$CLOUD_DIR/hang" ]; then log "hang $$"; sleep 100000; fi
    if [ -e "$CLOUD_DIR/plan" ]; then
      outcome=$(flock "$CLOUD_DIR/plan.lock" -c "head -n1 '$CLOUD_DIR/plan'; sed -i 1d '$CLOUD_DIR/plan'")
    else
      r=$((RANDOM % 100))
      fail_pct=$(cat "$CLOUD_DIR/fail_pct" 2>/dev/null || echo 0)
      hang_pct=$(cat "$CLOUD_DIR/hang_pct" 2>/dev/null || echo 0)
      outcome=ok
      [ "$r" -lt $((fail_pct + hang_pct)) ] && outcome=hang
      [ "$r" -lt "$fail_pct" ] && outcome=fail
    fi
    if [ "$outcome" = fail ]; then log "fail"; echo "out of capacity (simulated)" >&2; exit 1; fi
    if [ "$outcome" = hang ]; then log "hang $$"; sleep 100000; fi
    name="vm-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    agent=yes; [ -e "$CLOUD_DIR/no_agent" ] && agent=no
    boot_vm "$name" "$agent"
    # slow_return: the VM (and its agent) is up, but the create call answers only after this
    # many seconds, as a cloud API may: the agent can connect before its create returns.
    if [ -e "$CLOUD_DIR/slow_return" ]; then sleep "$(cat "$CLOUD_DIR/slow_return")"; fi
    log "returned $name"
    echo "$name"
    ;;
  batch)
    log "batch $2 $3"
    for _ in $(seq 1 "$2"); do
      name="vm-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
      boot_vm "$name" yes "$3"
      echo "$name"
    done
    ;;
  vm)
    boot_vm "$2" no
    ;;
  stop)
    # stop_ignored: this one stop answers "done" and deletes nothing (a cloud call that was
    # accepted and then lost); the knob is used up.
    if [ -e "$CLOUD_DIR/stop_ignored" ]; then rm -f "$CLOUD_DIR/stop_ignored"; log "stop-ignored $2"; exit 0; fi
    log "stop $2"
    pid=$(awk -v n="$2" '$1=="start" && $2==n {print $3}' "$ledger" | tail -1)
    if [ -n "$pid" ] && [ -e "$CLOUD_DIR/stop_keeps_agent" ]; then
      agent=$(pgrep -P "$pid" | head -1)
      kill -KILL "$pid" 2>/dev/null  # the VM only: the agent lives on (still in its group)
      log "stop-kept-agent $2 ${agent:-none}"
      exit 0
    fi
    [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    exit 0
    ;;
  list)
    [ -e "$CLOUD_DIR/list_fail" ] && { echo "the cloud API is down (simulated)" >&2; exit 1; }
    awk '$1=="start" {print $2, $3}' "$ledger" 2>/dev/null | while read -r n p; do
      # A killed VM whose zombie init has not reaped yet is gone, not running.
      state=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)
      [ -n "$state" ] && [ "$state" != Z ] && echo "$n running"
    done
    exit 0
    ;;
  *)
    echo "usage: cloud.sh start|stop NAME|list|batch COUNT LABEL|vm NAME" >&2
    exit 2
    ;;
esac
