#!/usr/bin/env bash
# Stand-in for Tailscale's containerboot (the gateway image's entrypoint) in the bootstrap
# tests: Tailscale cannot run on the test machine. It makes the socket path the real one
# would, says what it was given (never the key) and stays up until stopped.
set -euo pipefail
socket=${TS_SOCKET:-/tmp/tailscaled.sock}
mkdir -p "$(dirname "$socket")" "${TS_STATE_DIR:-/var/lib/tailscale}"
: >"$socket"
key_state=absent
if [[ -n ${TS_AUTHKEY:-} ]]; then key_state=present; fi
echo "stand-in gateway (no tailscaled): hostname=${TS_HOSTNAME:-} extra_args=${TS_EXTRA_ARGS:-} key=$key_state"
trap 'exit 0' TERM INT
sleep infinity &
wait
