#!/usr/bin/env bash
# Start or update the serving project and wait until vLLM answers /health.
# If it is not healthy in time, bring back the last good compose file: the failed
# one is kept for inspection, and the script still fails so the deploy reports it.
#
#   start.sh --compose-file F --project NAME --container NAME --timeout SECONDS \
#            --last-good F --failed F --env-file F --env-applied F [--force-recreate]
set -euo pipefail

recreate=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --compose-file) compose_file=$2 ;;
        --project) project=$2 ;;
        --container) container=$2 ;;
        --timeout) timeout=$2 ;;
        --last-good) last_good=$2 ;;
        --failed) failed=$2 ;;
        --env-file) env_file=$2 ;;
        --env-applied) env_applied=$2 ;;
        --force-recreate) recreate=(--force-recreate); shift; continue ;;
        *) echo "start.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${compose_file:?}" "${project:?}" "${container:?}" "${timeout:?}" "${last_good:?}" "${failed:?}" "${env_file:?}" "${env_applied:?}"

up() {
    docker compose --project-directory "$(dirname "$compose_file")" -f "$compose_file" -p "$project" \
        up -d --wait --wait-timeout "$timeout" --remove-orphans "$@"
}

progress() {  # a line every 15 s while compose waits: how long, and vLLM's last log line
    local waited=0 last
    # sleep gets no stdout or stderr: killed with this loop at exit, a sleep still holding them would keep
    # whoever reads the script's output (pyinfra) waiting up to 15 s more.
    while sleep 15 >/dev/null 2>&1; do
        waited=$((waited + 15))
        last=$(docker logs --tail 1 "$container" 2>&1 | cut -c1-120)
        echo "lorafleet: waiting for /health: ${waited}s of ${timeout}s; vLLM: ${last:-starting}"
    done
}
progress &
progress_pid=$!
trap 'kill "$progress_pid" 2>/dev/null || true' EXIT

if up "${recreate[@]}"; then
    cp "$compose_file" "$last_good"
    # What the running vLLM started with: a rotated key is noticed even after a half-done deploy.
    (umask 077; sha1sum "$env_file" | cut -d' ' -f1 >"$env_applied")
    exit 0
fi
echo "lorafleet: vLLM did not become healthy within ${timeout}s; last log lines:" >&2
docker logs --tail 40 "$container" >&2 || true
if [[ -f $last_good ]]; then
    echo "lorafleet: rolling back to the last good compose project" >&2
    cp "$compose_file" "$failed"
    cp "$last_good" "$compose_file"
    if up --force-recreate >&2; then
        echo "lorafleet: rolled back; the last good state is serving" >&2
    fi
fi
exit 1
