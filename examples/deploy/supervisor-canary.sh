#!/bin/sh
# A staged deploy under Supervisor: start one process of the group, wait until its
# baseline passes (self-recycle check --ready on its status file), then start the rest.
# The group's program block sets SELF_RECYCLE_STATUS_FILE per process, e.g.
#   environment=SELF_RECYCLE_STATUS_FILE="/run/worker/%(process_num)02d.status.json"
# and autostart=false. Usage:
#   supervisor-canary.sh GROUP STATUS_FILE_OF_00 [TIMEOUT_SECONDS] [supervisorctl args...]
set -eu
group=$1
status=$2
timeout=${3:-120}
shift 3 || shift $#
ctl() { supervisorctl "$@"; }
check() { ${SELF_RECYCLE_CLI:-npx self-recycle} check "$status" --ready; }

ctl "$@" start "$group:${group}_00"
deadline=$(( $(date +%s) + timeout ))
until check; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "canary ${group}_00 is not ready after ${timeout}s: stopping it, not starting the rest" >&2
    ctl "$@" stop "$group:${group}_00"
    exit 1
  fi
  sleep 1
done
ctl "$@" start "$group:*"
