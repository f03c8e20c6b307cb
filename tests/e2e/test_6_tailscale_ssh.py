"""The real deploy through a server that authenticates like Tailscale SSH, with the settings a user's inventory makes.

The other e2e tests reach their gateway stand-in through OpenSSH, which checks
the key. Tailscale SSH does not: it takes "none", ignores any key or password
offered, and serves SFTP itself (tests/support/tailscale_ssh.py does the same,
on loopback). The SSH settings come from the project's inventory.py, fed the
LORAFLEET_* variables a user sets; the rest is the local CPU target's data with
this module's own compose project, port and run folder. The SSH server runs on
this machine, so the deploy's paths and the engine's are the same (publish mode,
no gateway container). No agent and a HOME without ~/.ssh: only the key the
inventory names can be offered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import asyncssh
import pytest
import requests

from tests.support import tailscale_ssh
from tests.support.docker_env import docker_engine_problem
from tests.support.scenario import ROOT, Scenario, sh

PROBLEM = docker_engine_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")

HOST = "@ssh/127.0.0.1"


def user_inventory(home: Path, **settings: str) -> tuple[str, dict]:
    """The host and data inventory.py makes from these LORAFLEET_* settings (no .secrets.env, this HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    env.update(HOME=str(home), LORAFLEET_SECRETS_FILE=os.devnull, **settings)
    result = subprocess.run(
        [sys.executable, "-c", "import json, runpy; print(json.dumps(runpy.run_path('inventory.py')['gpu']))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    [(host, data)] = json.loads(result.stdout)
    return host, data


@pytest.fixture(scope="module")
def stack(report):
    """The local CPU target's data, reached through the Tailscale SSH stand-in as a user's inventory reaches the box."""
    scenario = Scenario("tailscale", report=report)
    try:
        scenario.create()
        with tailscale_ssh.running(scenario.dir / "tailscale-ssh") as (port, host_key_line):
            scenario.home = scenario.dir / "home"  # no ~/.ssh: no default key, no known_hosts
            scenario.home.mkdir()
            scenario.ssh_port, scenario.host_key_line = port, host_key_line
            # A throwaway key: the server never sees its public half, as Tailscale SSH never checks one.
            key = scenario.dir / "throwaway_ed25519"
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
            # No entry for the server yet: the first connection meets an unknown host key.
            scenario.known_hosts = scenario.dir / "known_hosts"
            host, ssh_data = user_inventory(
                scenario.home, LORAFLEET_GPU_HOST="127.0.0.1", LORAFLEET_SSH_PORT=str(port),
                LORAFLEET_SSH_KEY=str(key), LORAFLEET_KNOWN_HOSTS=str(scenario.known_hosts))
            assert host == HOST and ssh_data["ssh_key"] == str(key), ssh_data
            scenario.host_name = host
            scenario.write_inventory(**ssh_data)
            report(f"[e2e tailscale] Tailscale SSH stand-in on 127.0.0.1:{port}; inventory SSH data {ssh_data}")
            yield scenario
    finally:
        scenario.destroy()


def deploy(scenario: Scenario, check: bool = True) -> dict:
    """The real deploy with no SSH agent and a HOME without keys."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(scenario.home))
        env.delenv("SSH_AUTH_SOCK", raising=False)
        return scenario.deploy(check=check)


@contextmanager
def declared(scenario: Scenario, **changes):
    """The inventory with these settings changed (None: left out), restored afterwards."""
    saved = dict(scenario.data)
    for name, value in changes.items():
        if value is None:
            scenario.data.pop(name, None)
        else:
            scenario.data[name] = value
    scenario.write_inventory()
    try:
        yield
    finally:
        scenario.data = saved
        scenario.write_inventory()


def connect_lines(payload: dict) -> list[str]:
    return [line.strip() for line in payload["output"].splitlines() if f"[{HOST}]" in line or "pyinfra error" in line]


def test_without_a_key_paramiko_offers_nothing_and_pyinfra_stops(stack):
    # Tailscale SSH would take "none", but paramiko never sends it: with no key file, agent or password it gives up
    # before asking the server (paramiko #2370, pyinfra #1021).
    pinned = stack.dir / "known_hosts.pinned"
    pinned.write_text(stack.host_key_line + "\n")
    with declared(stack, ssh_key=None, ssh_known_hosts_file=str(pinned)):
        payload = deploy(stack, check=False)
    stack.report(f"[e2e tailscale] no key offered: exit {payload['returncode']}, {connect_lines(payload)}")
    assert payload["returncode"] == 1, payload["output"][-3000:]
    assert connect_lines(payload) == [
        f"[{HOST}] SSH error (No authentication methods available)",
        "--> pyinfra error: No hosts remaining!",
    ], payload["output"][-3000:]


def test_without_LORAFLEET_SSH_KEY_the_inventory_offers_a_key_file_that_must_exist(stack):
    # What a user without LORAFLEET_SSH_KEY and without ~/.ssh/id_ed25519 runs into.
    _, ssh_data = user_inventory(stack.home, LORAFLEET_GPU_HOST="127.0.0.1", LORAFLEET_SSH_PORT=str(stack.ssh_port))
    default_key = stack.home / ".ssh" / "id_ed25519"
    assert ssh_data["ssh_key"] == str(default_key)
    with declared(stack, ssh_key=ssh_data["ssh_key"]):
        payload = deploy(stack, check=False)
    stack.report(f"[e2e tailscale] default key missing: exit {payload['returncode']}, {connect_lines(payload)}")
    assert payload["returncode"] == 1, payload["output"][-3000:]
    # After a traceback; the last line reads "--> pyinfra error in src/gevent/greenlet.py line N: No such ...".
    last = connect_lines(payload)[-1]
    assert last.startswith("--> pyinfra error") and last.endswith(f": No such private key file: {default_key}"), \
        payload["output"][-3000:]


def test_a_changed_host_key_stops_the_deploy(stack):
    # What a user sees when the box's key is not the one recorded (e.g. the gateway lost its Tailscale state).
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().split()[:2]
    pinned = stack.dir / "known_hosts.other"
    pinned.write_text(f"[127.0.0.1]:{stack.ssh_port} {' '.join(other)}\n")
    with declared(stack, ssh_known_hosts_file=str(pinned)):
        payload = deploy(stack, check=False)
    stack.report(f"[e2e tailscale] changed host key: exit {payload['returncode']}, {connect_lines(payload)}")
    assert payload["returncode"] == 1, payload["output"][-3000:]
    assert f"ssh-keygen -R [127.0.0.1]:{stack.ssh_port}" in payload["output"], payload["output"][-3000:]
    assert connect_lines(payload) == [
        f"[{HOST}] SSH host key error (Host key for 127.0.0.1 does not match.)",
        "--> pyinfra error: No hosts remaining!",
    ], payload["output"][-3000:]


def test_with_any_key_the_deploy_converges_and_accepts_the_new_host_key(stack):
    with stack.phase("converge"):
        stack.first_deploy = deploy(stack)
    assert "Start vLLM and wait for /health" in " ".join(stack.changed_operations(stack.first_deploy))
    assert requests.get(stack.endpoint.removesuffix("/v1") + "/health", timeout=30).status_code == 200
    # pyinfra's default (ssh_strict_host_key_checking "accept-new") trusted the unknown key and wrote it down.
    assert (f"No host key for [127.0.0.1]:{stack.ssh_port} found in known_hosts, accepting & adding to host keys file"
            in stack.first_deploy["output"]), stack.first_deploy["output"][:3000]
    written = stack.known_hosts.read_text().split()
    assert written[-2:] == stack.host_key_line.split()[-2:], f"{stack.known_hosts}: {written}"


def test_second_run_changes_nothing(stack):
    assert getattr(stack, "first_deploy", None), "the converge did not run (see the test before)"
    started = stack.vllm_started_at()
    with stack.phase("idempotence"):
        payload = deploy(stack)
    changed = stack.changed_operations(payload)
    stack.report(f"[e2e tailscale] idempotence: {len(changed)} changed operations {changed}")
    assert changed == [], f"a second run with nothing changed changed: {changed}"
    assert stack.vllm_started_at() == started, "the second run restarted vLLM"
    assert "No host key" not in payload["output"], "the host key written by the first run was not used"


def test_destroy_removes_everything_it_made(stack):
    stack.destroy()
    assert stack.leftovers() == []
