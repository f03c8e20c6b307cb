"""The router's plan: pure functions from settings and the fleet to what lands on the router host."""

from __future__ import annotations

import shlex

import yaml

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.hashing import sha256_hex, shipped_bytes
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import host_script, paths


def project(s: Settings) -> str:
    """Its own compose project: the serving project's `up --remove-orphans` must never touch it."""
    return f"{s.compose_project}-router"


def container(s: Settings) -> str:
    return f"{project(s)}-haproxy"


def image(s: Settings) -> str:
    """The router image, tagged by what it is built from (the Dockerfile, the base)."""
    inputs = [shipped_bytes(path) for _, path in sorted(layout.ROUTER_BUILD_FILES.items())]
    return f"lorafleet/router:{sha256_hex(*inputs, s.cpu_base_image)}"


def build_command(s: Settings) -> str:
    return shlex.join(["bash", host_script(s, "build.sh"), image(s), paths(s).router_build_dir,
                       f"BASE_IMAGE={s.cpu_base_image}"])


def compose(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """The router's compose project. Changes only with its image, port or network: a config change is a reload."""
    p = paths(s)
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{s.router_port}/health', timeout=4)"
    service = {
        "image": image(s),
        "container_name": container(s),
        "volumes": [engine.bind(p.router_run_dir, layout.CONTAINER_ROUTER_DIR, "ro")],
        "healthcheck": {"test": ["CMD", "python3", "-c", probe], "interval": "10s", "timeout": "5s",
                        "retries": 3, "start_period": "30s"},
        "restart": "unless-stopped",
    }
    if s.router_network_mode == "gateway":
        service["network_mode"] = f"container:{s.router_gateway_container}"
    else:
        service["ports"] = [f"{s.publish_address}:{s.router_port}:{s.router_port}"]
    header = "# Rendered by lorafleet from group_data; the fleet itself is in run/haproxy.cfg (reloaded, never a restart).\n"
    return header + yaml.safe_dump({"name": project(s), "services": {"router": service}}, sort_keys=False)


def compose_command(s: Settings, *args: str) -> str:
    p = paths(s)
    return shlex.join(["docker", "compose", "--project-directory", p.router_dir, "-f", p.router_compose_file,
                       "-p", project(s), *args])


def start_command(s: Settings) -> str:
    """Start the router and wait until it serves the configuration it was given; its log if it does not."""
    logs = shlex.join(["docker", "logs", "--tail", "40", container(s)])
    up = compose_command(s, "up", "-d")  # no --wait: ctl.py's wait is sooner than the first health check, and stricter
    return f"{{ {up} && {ctl_command(s, 'wait')}; }} || {{ {logs} >&2; exit 1; }}"


def ctl_command(s: Settings, *args: str) -> str:
    """Run ctl.py in the router container (it reads the configuration it was given)."""
    return shlex.join(["docker", "exec", container(s), "python3", f"{layout.CONTAINER_ROUTER_DIR}/ctl.py", *args])


def reload_command(s: Settings) -> str:
    """Check the new configuration, SIGUSR2 HAProxy's master (the container's first process), wait until it serves it.

    The master starts a worker on the new configuration and hands it the listening sockets; the old worker
    finishes the requests it holds (streams included) and exits. A configuration HAProxy refuses is never
    sent: the running one stays, and the deploy fails with HAProxy's reason.
    """
    check = shlex.join(["docker", "exec", container(s), "haproxy", "-c", "-f", f"{layout.CONTAINER_ROUTER_DIR}/haproxy.cfg"])
    check += " >/dev/null"  # its alerts (on stderr) stay; "Configuration file is valid" goes
    signal = shlex.join(["docker", "kill", "--signal", "USR2", container(s)])
    return f"{check} && {signal} >/dev/null && {ctl_command(s, 'wait')}"
