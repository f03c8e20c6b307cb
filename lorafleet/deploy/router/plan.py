"""The router's plan: pure functions from settings and the fleet to what lands on the router host."""

from __future__ import annotations

import shlex

import yaml

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.fleet import Fleet, router_config
from lorafleet.deploy.hashing import sha256_hex, shipped_bytes
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import host_script, paths


def project(s: Settings) -> str:
    """Its own compose project: the serving project's `up --remove-orphans` must never touch it."""
    return f"{s.compose_project}-router"


def container(s: Settings) -> str:
    return f"{project(s)}-litellm"


def image(s: Settings) -> str:
    """The router image, tagged by what it is built from (the pinned lock, the Dockerfile, the base)."""
    inputs = [shipped_bytes(path) for _, path in sorted(layout.ROUTER_BUILD_FILES.items())]
    return f"lorafleet/router:{sha256_hex(*inputs, s.cpu_base_image)}"


def build_command(s: Settings) -> str:
    return shlex.join(["bash", host_script(s, "build.sh"), image(s), paths(s).router_build_dir,
                       f"BASE_IMAGE={s.cpu_base_image}"])


def compose(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """The router's compose project. Changes only with its image, port or network: a config change is a reload."""
    p = paths(s)
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{s.router_port}/health/liveliness', timeout=4)"
    service = {
        "image": image(s),
        "container_name": container(s),
        # gunicorn: its master reloads config.yaml on SIGHUP, starting new workers before the old ones
        # stop, so a changed fleet never drops the router's listening socket.
        "command": ["--config", f"{layout.CONTAINER_ROUTER_DIR}/config.yaml", "--host", "0.0.0.0",
                    "--port", str(s.router_port), "--num_workers", "1", "--run_gunicorn"],
        "volumes": [engine.bind(p.router_run_dir, layout.CONTAINER_ROUTER_DIR, "ro")],
        # Tolerant: the probe shares the router's event loop with its health checks of every box, and a
        # busy machine must not get the router restarted for being slow to say it is alive.
        "healthcheck": {"test": ["CMD", "python3", "-c", probe], "interval": "10s", "timeout": "10s",
                        "retries": 6, "start_period": "180s"},
        "restart": "unless-stopped",
    }
    if s.router_network_mode == "gateway":
        service["network_mode"] = f"container:{s.router_gateway_container}"
    else:
        service["ports"] = [f"{s.publish_address}:{s.router_port}:{s.router_port}"]
    header = "# Rendered by lorafleet from group_data; the fleet itself is in run/config.yaml (reloaded, never a restart).\n"
    return header + yaml.safe_dump({"name": project(s), "services": {"router": service}}, sort_keys=False)


def compose_command(s: Settings, *args: str) -> str:
    p = paths(s)
    return shlex.join(["docker", "compose", "--project-directory", p.router_dir, "-f", p.router_compose_file,
                       "-p", project(s), *args])


def start_command(s: Settings, fleet: Fleet) -> str:
    """Start the router and wait for its health and for it to list the whole fleet.

    A router that does not come up gets its last log lines and its workers' stacks printed, then is
    recreated once: LiteLLM's startup once never finished on a CI machine (the worker printed the
    fleet's models and then nothing), and a deploy must not leave a fleet without its door for that.
    """
    logs = shlex.join(["docker", "logs", "--tail", "60", container(s)])
    wait = ctl_command(s, "wait", *expected(fleet))

    def up(*force: str) -> str:
        return f"{compose_command(s, 'up', '-d', *force, '--wait', '--wait-timeout', '300')} && {wait}"

    stacks = (f'since=$(date -u +%Y-%m-%dT%H:%M:%SZ); {ctl_command(s, "stacks")} && sleep 2 && '
              f'docker logs --since "$since" {shlex.quote(container(s))} >&2')
    retry = "echo 'lorafleet: the router did not come up; its stacks are above; recreating it once' >&2"
    return (f"{{ {up()}; }} || {{ {logs} >&2; {stacks}; {retry}; {up('--force-recreate')}; }} "
            f"|| {{ {logs} >&2; exit 1; }}")


def ctl_command(s: Settings, *args: str) -> str:
    """Run ctl.py in the router container (it reads the config it was given, key included)."""
    return shlex.join(["docker", "exec", container(s), "python3", f"{layout.CONTAINER_ROUTER_DIR}/ctl.py", *args])


def reload_command(s: Settings, *wait: str) -> str:
    """SIGHUP the router (gunicorn's master is the container's first process), then wait until it serves the new config."""
    return f"{shlex.join(['docker', 'kill', '--signal', 'HUP', container(s)])} >/dev/null && {ctl_command(s, 'wait', *wait)}"


def expected(fleet: Fleet, drained: frozenset[str] = frozenset()) -> list[str]:
    """ctl.py's arguments: the deployment ids the reloaded router must list (and no others)."""
    return [d["model_info"]["id"] for d in router_config(fleet, drained)["model_list"]]
