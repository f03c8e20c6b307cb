"""The serving stack: manifest, compose project, start with rollback, adapter sync, verify."""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import files, server

from lorafleet import plan
from lorafleet.facts import ServingState
from lorafleet.settings import Settings


def apply(s: Settings, versions: dict[str, str]) -> None:
    p = plan.paths(s)
    container = plan.container_name(s)
    state = host.get_fact(ServingState, container=container, gateway=s.gateway_container if s.network_mode == "gateway" else "")

    manifest = files.put(
        name="Write the adapter manifest", src=StringIO(plan.render_manifest(s, versions)), dest=p.manifest
    )
    compose = files.put(name="Render the serving compose project", src=StringIO(plan.render_compose(s)), dest=p.compose_file)

    needs_start = not state["running"] or not state["healthy"] or state.get("network_stale", False)
    up = server.shell(
        name="Start vLLM and wait for /health (rolls back on failure)",
        commands=[plan.start_with_rollback_command(s, force_recreate=state.get("network_stale", False))],
        _if=lambda: needs_start or compose.did_change(),
    )
    declared = {a.name for a in s.adapters}
    drifted = state["served"] is not None and set(state["served"]) != declared
    sync = server.shell(
        name="Bring the served adapters to the manifest (no restart)",
        commands=[f"docker exec {container} python3 {plan.CONTAINER_SERVE_DIR}/sync_adapters.py"],
        _if=lambda: drifted or manifest.did_change(),
    )
    server.shell(
        name="Verify /v1/models lists the base model and every adapter",
        commands=[f"docker exec {container} python3 {plan.CONTAINER_SERVE_DIR}/sync_adapters.py --verify"],
        _if=lambda: up.did_change() or sync.did_change(),
    )
    logger.info(f"{host.name}: the endpoint is {plan.endpoint_url(s, host.data.get('endpoint_host') or host.name)}")
