#!/usr/bin/env bash
# The deploy lock on the host: one deploy at a time applies changes (the way Kamal's deploy lock works).
#
#   lock.sh acquire LOCK_DIR WAIT_SECONDS OWNER   # waits up to WAIT_SECONDS, then fails naming the holder
#   lock.sh release LOCK_DIR OWNER                # releases it if OWNER holds it
#   lock.sh break LOCK_DIR                        # removes it, whoever holds it (a crashed deploy's lock)
#   lock.sh show LOCK_DIR                         # prints the holder, or nothing
#
# OWNER is one line: "user@laptop pid N since TIME". mkdir is atomic: two deploys
# cannot both create the folder.
set -euo pipefail

action=${1:?action} lock=${2:?lock dir}
holder() { cat "$lock/owner" 2>/dev/null || echo "unknown (no owner file)"; }

case $action in
    acquire)
        wait=${3:?wait seconds} owner=${4:?owner}
        mkdir -p "$(dirname "$lock")"
        deadline=$((SECONDS + wait))
        announced=0
        until mkdir "$lock" 2>/dev/null; do
            if [[ -f $lock/owner && $(cat "$lock/owner") == "$owner" ]]; then
                exit 0  # ours already (a retried operation)
            fi
            if ((SECONDS >= deadline)); then
                echo "lorafleet: the deploy lock is held by $(holder)." >&2
                echo "lorafleet: another deploy is running on this box; wait for it, or if it crashed, release the lock:" >&2
                echo "lorafleet:     pyinfra inventory.py deploy.py --data break_deploy_lock=True" >&2
                exit 1
            fi
            if ((!announced)); then
                echo "lorafleet: waiting up to ${wait}s for the deploy lock, held by $(holder)" >&2
                announced=1
            fi
            sleep 2
        done
        printf '%s\n' "$owner" >"$lock/owner"
        ;;
    release)
        owner=${3:?owner}
        if [[ -f $lock/owner && $(cat "$lock/owner") == "$owner" ]]; then
            rm -rf "$lock"
        fi
        ;;
    break)
        if [[ -d $lock ]]; then
            echo "lorafleet: breaking the deploy lock held by $(holder)" >&2
            rm -rf "$lock"
        fi
        ;;
    show)
        if [[ -d $lock ]]; then holder; fi
        ;;
    *) echo "lock.sh: unknown action $action" >&2; exit 2 ;;
esac
