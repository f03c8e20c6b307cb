"""The serving stack: a new image checked, manifest, compose project, start with rollback, adapter sync, verify; and its removal."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, python, server

from lorafleet.deploy import hashing, layout, removal, stack
from lorafleet.deploy.credentials import key_reader
from lorafleet.deploy.decide import ServingFacts, decide
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.facts import ComposeProject, ImageId, ServingState
from lorafleet.deploy.fleet import Fleet, endpoint_url
from lorafleet.deploy.ops import live
from lorafleet.deploy.router.rolling import rolling_start
from lorafleet.deploy.serving import next_steps
from lorafleet.deploy.serving import plan as serving_plan
from lorafleet.deploy.settings import Settings


def apply(s: Settings, versions: dict[str, str], engine: EngineView = SAME_PATHS, fleet: Fleet | None = None) -> None:
    p = stack.paths(s)
    container = stack.container_name(s)
    state = host.get_fact(ServingState, container=container, gateway=s.gateway_container if s.network_mode == "gateway" else "")
    applied = host.get_fact(FileContents, path=p.env_applied) or [""]
    image = stack.serving_image(s)
    decision = decide(
        ServingFacts.from_fact(state, env_applied=applied[0].strip()),
        server_hash=serving_plan.server_hash(s),
        env_hash=hashing.sha1_hex(stack.render_env_file(s)),
        versions=versions,
        image_id=host.get_fact(ImageId, image=image),
    )
    for reason in decision.reasons:
        logger.info(f"{host.name}: {reason}")
    if decision.check_image:
        # Before the manifest, the compose file or the container change: a failure stops the deploy here.
        server.shell(name=f"Check that {image} imports the plugins and renders the chat template",
                     commands=[serving_plan.image_check_command(s, engine)])

    manifest = files.put(
        name="Write the adapter manifest", src=StringIO(serving_plan.render_manifest(s, versions)), dest=p.manifest
    )
    compose = files.put(name="Render the serving compose project", src=StringIO(serving_plan.render_compose(s, engine)), dest=p.compose_file)
    start = serving_plan.start_with_rollback_command(s, force_recreate=decision.recreate)
    if fleet and state["running"]:
        # A box that serves now restarts only out of the router's rotation, one box at a time.
        up = rolling_start(
            name="Restart vLLM out of the router's rotation, one box at a time (rolls back on failure)",
            start_command=start, container=container, fleet=fleet, box=host.name,
            _serial=True, _if=lambda: decision.start or compose.did_change(),
        )
    else:
        up = server.shell(
            name="Start vLLM and wait for /health (rolls back on failure)",
            commands=[live(start)],
            _if=lambda: decision.start or compose.did_change(),
        )
    sync = server.shell(
        name="Bring the served adapters to the manifest (no restart)",
        commands=[shlex.join(["docker", "exec", container, "python3", layout.container_script("sync_adapters.py")])],
        _if=lambda: decision.sync or manifest.did_change(),
    )
    verify = server.shell(
        name="Verify /v1/models lists the base model and every adapter",
        commands=[shlex.join(["docker", "exec", container, "python3", layout.container_script("sync_adapters.py"), "--verify"])],
        _if=lambda: up.did_change() or sync.did_change(),
    )
    logger.info(f"{host.name}: the endpoint is {endpoint_url(s, host.name)}")
    # Only after a run that started or synced vLLM: an unchanged second run stays at zero changes.
    if not fleet:  # a fleet is called through its router, which prints its own
        python.call(name="Print the next commands", function=_print_next, s=s, host_name=host.name, _if=verify.did_change)


def _print_next(s: Settings, host_name: str) -> None:
    logger.info(f"{host_name}: serving at {endpoint_url(s, host_name)}; try:")
    for line in next_steps.next_commands(s, host_name, key_reader(layout.PROJECT_ROOT, s.secrets.api_key)):
        logger.info(f"    {line}")


def remove(s: Settings) -> None:
    """Stop and remove vLLM's container and its project's networks: the port and the memory come back.

    Never the gateway, whatever the labels say; the serving image stays (an image is a cache: a later deploy reuses it).
    """
    found = host.get_fact(ComposeProject, project=s.compose_project)
    commands = removal.project_commands(found, keep=(s.gateway_container, s.router_gateway_container))
    if commands:
        server.shell(name=f"Stop and remove the serving stack (frees port {s.port})", commands=commands)
    image = stack.serving_image(s)
    if host.get_fact(ImageId, image=image):
        logger.info(f"{host.name}: the serving image {image} stays (`docker image rm {image}` frees its space)")
    if s.network_mode == "gateway":
        logger.info(f"{host.name}: the gateway {s.gateway_container} stays: it is the box's network door, and this run's")
