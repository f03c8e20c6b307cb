#!/bin/sh
# Start sshd in the foreground, logging to stderr (docker logs). Host keys are
# made on the first start, so every target container has its own.
set -eu
mkdir -p /run/sshd
chmod 0755 /run/sshd
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C "lorafleet-e2e-target" -f /etc/ssh/ssh_host_ed25519_key
fi
exec /usr/sbin/sshd -D -e "$@"
