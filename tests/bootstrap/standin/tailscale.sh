#!/usr/bin/env bash
# Stand-in for the tailscale CLI in the bootstrap tests: `status --json` answers as a node
# that joined the tailnet when the container got a key (TS_AUTHKEY from the env_file), as
# a logged-out node otherwise. Other subcommands are not implemented.
set -euo pipefail
case " $* " in
    *" status "*) ;;
    *) echo "stand-in tailscale: only 'status' is implemented" >&2; exit 1 ;;
esac
state=NeedsLogin
if [[ -n ${TS_AUTHKEY:-} ]]; then state=Running; fi
name=${TS_HOSTNAME:-$(hostname)}
printf '{"BackendState": "%s", "Self": {"HostName": "%s", "DNSName": "%s.standin.ts.net."}}\n' "$state" "$name" "$name"
