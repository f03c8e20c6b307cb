"""The fleet's router on its host: image, configuration, compose project, reload, verify.

The configuration (every box and adapter, and the boxes' keys) is a 0600 file HAProxy
reloads on SIGUSR2: a changed fleet never restarts it. Only its image, port or
network recreate the container. `remove` stops and removes it (remove.py); its gateway stays.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import files, python, server

from lorafleet.deploy import layout, removal, stack
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.facts import ComposeProject, ContainerRunning, ImageId
from lorafleet.deploy.fleet import Fleet
from lorafleet.deploy.ops import SecretText, live, secret_file, shipped
from lorafleet.deploy.router import config as router_config
from lorafleet.deploy.router import plan
from lorafleet.deploy.settings import Settings


def apply(s: Settings, fleet: Fleet, engine: EngineView = SAME_PATHS) -> None:
    p = stack.paths(s)
    for folder in (p.router_dir, p.router_build_dir):
        files.directory(name=f"Ensure folder {folder}", path=folder, present=True)
    files.directory(name=f"Ensure private folder {p.router_run_dir}", path=p.router_run_dir, mode="700", present=True)

    for name, source in sorted(layout.ROUTER_BUILD_FILES.items()):
        files.put(name=f"Upload the router's {name}", src=shipped(source), dest=f"{p.router_build_dir}/{name}")
    if not host.get_fact(ImageId, image=plan.image(s)):
        server.shell(name=f"Build the router image {plan.image(s)}", commands=[live(plan.build_command(s))])
    files.put(name="Upload the router's ctl.py", src=shipped(layout.ROUTER_CTL), dest=f"{p.router_run_dir}/ctl.py")
    files.put(name="Stage the router gateway's compose file", src=shipped(layout.ROUTER_GATEWAY_COMPOSE),
              dest=f"{p.router_dir}/gateway.compose.yaml")

    config = secret_file(
        name="Write the router's configuration: every box and adapter (0600)",
        content=SecretText(router_config.render(fleet)),
        dest=p.router_config,
        temp_dir=p.router_run_dir,
    )
    # LiteLLM's configuration, from before the router was HAProxy: it held the boxes' keys.
    files.file(name="Remove the former router's config.yaml (it held the boxes' keys)",
               path=f"{p.router_run_dir}/config.yaml", present=False)
    compose = files.put(name="Render the router's compose project", src=StringIO(plan.compose(s, engine)),
                        dest=p.router_compose_file)
    running = host.get_fact(ContainerRunning, container=plan.container(s))
    up = server.shell(
        name="Start the router and wait for its health",
        commands=[plan.start_command(s)],
        _if=lambda: not running or compose.did_change(),
    )
    server.shell(
        name="Reload the router's configuration (no restart)",
        commands=[plan.reload_command(s)],
        _if=lambda: config.did_change() and not up.did_change(),
    )
    for box in fleet.boxes if len(fleet.boxes) > 1 else ():
        for model in fleet.only_on(box.name):
            logger.warning(f"{host.name}: {model} is served by {box.name} alone: it is unavailable while that box restarts")
    python.call(name="Print the fleet's endpoint", function=_print_endpoint, fleet=fleet, _if=up.did_change)


def _print_endpoint(fleet: Fleet) -> None:
    logger.info(f"the fleet's endpoint: {fleet.endpoint} ({len(fleet.boxes)} boxes, {len(fleet.models)} models); "
                f"try: lorafleet status --fleet && lorafleet check --url {fleet.endpoint}")


def remove(s: Settings) -> None:
    """Stop and remove the router's container and its project's networks; its gateway and its image stay."""
    found = host.get_fact(ComposeProject, project=plan.project(s))
    commands = removal.project_commands(found, keep=(s.router_gateway_container, s.gateway_container))
    if commands:
        server.shell(name="Stop and remove the router", commands=commands)
    if host.get_fact(ImageId, image=plan.image(s)):
        logger.info(f"{host.name}: the router image {plan.image(s)} stays (`docker image rm {plan.image(s)}` frees its space)")
