"""The serving stack: manifest, compose project, start with rollback, adapter sync, verify."""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger
from pyinfra.facts.files import FileContents
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

    # vLLM reads the secrets env file only when its container is created: a rotated key needs a new one.
    # Compared with what the running container started with, so a deploy that failed half-way still catches up.
    applied = host.get_fact(FileContents, path=p.env_applied) or [""]
    secrets_changed = state["exists"] and applied[0].strip() != plan.sha1_hex(plan.render_env_file(s))
    recreate = state.get("network_stale", False) or secrets_changed
    # A container that is not from the current compose file (e.g. an interrupted start) is started again.
    stale_engine = state["exists"] and state.get("engine") != plan.engine_hash(s)
    needs_start = not state["running"] or not state["healthy"] or recreate or stale_engine
    up = server.shell(
        name="Start vLLM and wait for /health (rolls back on failure)",
        commands=[plan.start_with_rollback_command(s, force_recreate=recreate)],
        _if=lambda: needs_start or compose.did_change(),
    )
    declared = {a.name for a in s.adapters}
    # Drift: another adapter set, or weights other than the manifest's (e.g. a sync that failed half-way).
    drifted = state["served"] is not None and (
        set(state["served"]) != declared or any(state["applied"].get(n) != v for n, v in versions.items())
    )
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
    logger.info(f"{host.name}: the endpoint is {plan.endpoint_url(s, host.data.dict(), host.name)}")
