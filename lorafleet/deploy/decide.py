"""Decide: what the serving step must do, as a pure function of the host's facts and the settings.

The serving step gathers facts (the container's state and image, the served
adapters, the hash of the secrets vLLM started with), renders what should be, and
asks `decide` whether to check a new image, start, recreate or sync. pyinfra only
carries it out; the compose file and the manifest add their own "changed" signals
at apply time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class ServingFacts:
    """What the host says about the serving stack before anything changes (see facts.ServingState)."""

    exists: bool = False
    running: bool = False
    healthy: bool = False
    server_hash: str = ""  # the server hash label of the running container (serving_plan.server_hash)
    image_id: str = ""  # the id of the image the container runs ("" when unknown)
    network_stale: bool = False  # vLLM joined a gateway that has since been recreated or restarted
    served: tuple[str, ...] | None = None  # adapter names vLLM lists; None when it cannot be asked
    applied: Mapping[str, str] = field(default_factory=dict)  # adapter -> version it loaded
    env_applied: str = ""  # sha1 of the secrets env file vLLM was started with

    @classmethod
    def from_fact(cls, state: Mapping, env_applied: str) -> "ServingFacts":
        served = state.get("served")
        return cls(
            exists=bool(state.get("exists")),
            running=bool(state.get("running")),
            healthy=bool(state.get("healthy")),
            server_hash=state.get("server_hash") or "",
            image_id=state.get("image_id") or "",
            network_stale=bool(state.get("network_stale")),
            served=None if served is None else tuple(served),
            applied=dict(state.get("applied") or {}),
            env_applied=env_applied,
        )


@dataclass(frozen=True)
class Decision:
    """What the serving step does, and why (the reasons are logged)."""

    start: bool  # run `compose up --wait` (with rollback) even if the compose file is unchanged
    recreate: bool  # ... with --force-recreate: the container must be new, not only started
    sync: bool  # bring the served adapters to the manifest even if the manifest is unchanged
    check_image: bool = False  # before the start: prove the plugins and chat template work in the image it brings
    reasons: tuple[str, ...] = ()


def decide(facts: ServingFacts, *, server_hash: str, env_hash: str, versions: Mapping[str, str],
           image_id: str | None) -> Decision:
    """Check the image, start, recreate or sync, from the facts and what the settings render.

    `server_hash` is the label the current compose file gives the container,
    `env_hash` the sha1 of the secrets env file about to be written, `versions`
    the declared adapters and the version each should have loaded, `image_id`
    the id of the image the settings name (None while the host does not have it).
    """
    reasons = []
    if not facts.exists:
        reasons.append("vLLM is not deployed yet")
    else:
        if not facts.running:
            reasons.append("vLLM is not running")
        elif not facts.healthy:
            reasons.append("vLLM is not healthy")
        if facts.server_hash != server_hash:
            # Includes a container a failed start rolled back to the last good compose file.
            reasons.append("the container is not from the current server hash (image, weights, flags or entrypoint)")
    recreate_reasons = []
    if facts.exists and facts.network_stale:
        recreate_reasons.append("the gateway was recreated or restarted: vLLM lost its network")
    if facts.exists and facts.env_applied != env_hash:
        # vLLM reads its env file only when the container is created.
        recreate_reasons.append("the API key changed since vLLM started")

    drift = []
    if facts.served is not None:
        declared = set(versions)
        if set(facts.served) != declared:
            drift.append("the served adapters differ from the declared ones")
        elif any(facts.applied.get(name) != version for name, version in versions.items()):
            drift.append("an adapter's loaded version differs from the manifest")
    start = bool(reasons or recreate_reasons)
    # Only a start brings another image; nothing is cached: the running container's image is the only memory, so
    # a check that failed (nothing started) or a start rolled back to the old image checks again next time.
    check_image = start and (not image_id or facts.image_id != image_id)
    checks = ["vLLM will run an image it does not run now: its plugins and chat template are checked in it first"]
    return Decision(
        start=start,
        recreate=bool(recreate_reasons),
        sync=bool(drift),
        check_image=check_image,
        reasons=tuple(reasons + recreate_reasons + drift + (checks if check_image else [])),
    )
