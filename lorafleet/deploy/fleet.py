"""The fleet: several boxes behind one router, as the inventory declares them.

Pure: from each host's name, groups and settings to the boxes and the router's
place (its configuration: router/config.py; docs/fleet.md). The
deploy and the operator's tools share it, so both see the same fleet.

An inventory without a `router` group is one box, served as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from lorafleet.deploy.settings import Settings, SettingsError

ROUTER_GROUP = "router"
# The router's Tailscale name when it lives in its own gateway (router/gateway.compose.yaml).
ROUTER_TS_HOSTNAME = "lorafleet-router"


def slug(name: str) -> str:
    """A host name as a config id or file name: `@ssh/10.0.0.2` becomes `ssh_10.0.0.2`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.removeprefix("@"))


def box_url(name: str, s: Settings) -> str:
    """A box's OpenAI base URL as the router reaches it: its tailnet name (endpoint_host, else the host name)."""
    return f"http://{s.endpoint_host or name.removeprefix('@ssh/')}:{s.port}/v1"


@dataclass(frozen=True)
class Box:
    """One serving box of the fleet."""

    name: str  # the inventory host name
    settings: Settings = field(repr=False)

    @property
    def url(self) -> str:
        return box_url(self.name, self.settings)

    @property
    def models(self) -> tuple[str, ...]:
        """What the box serves: the base model and every adapter declared for it."""
        return (self.settings.served_model_name, *(a.name for a in self.settings.adapters))


@dataclass(frozen=True)
class Fleet:
    """The boxes, and the host the router runs on."""

    boxes: tuple[Box, ...]
    router: str
    router_settings: Settings = field(repr=False)

    def box(self, name: str) -> Box | None:
        return next((b for b in self.boxes if b.name == name), None)

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the router serves, the base first."""
        seen: dict[str, None] = {}
        for box in self.boxes:
            seen.update(dict.fromkeys(box.models))
        return tuple(seen)

    def serving(self, model: str) -> tuple[Box, ...]:
        return tuple(b for b in self.boxes if model in b.models)

    def home(self, model: str) -> str:
        """The box an adapter prefers: stable for a given set of boxes, spread evenly over adapters."""
        names = sorted(b.name for b in self.serving(model))
        return names[int(hashlib.sha256(model.encode()).hexdigest(), 16) % len(names)]

    def only_on(self, box: str) -> tuple[str, ...]:
        """Models no other box serves: unavailable while `box` restarts."""
        return tuple(m for m in self.models if [b.name for b in self.serving(m)] == [box])

    @property
    def endpoint(self) -> str:
        """The fleet's one endpoint (OpenAI base URL) as the laptop reaches it."""
        s = self.router_settings
        if s.router_endpoint_url:
            return s.router_endpoint_url
        if s.router_network_mode == "gateway":
            return f"http://{ROUTER_TS_HOSTNAME}:{s.router_port}/v1"
        address = s.publish_address if s.publish_address not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{address}:{s.router_port}/v1"


def fleet_of(hosts: Iterable[tuple[str, Iterable[str], Settings]], router_key: str) -> Fleet | None:
    """The fleet of an inventory given as (host name, its groups, its settings); None without a router.

    Each host's settings carry its own vLLM key; `router_key` (the user's) opens the router.

    Raises SettingsError naming what is wrong: two routers, no box, boxes that disagree on the base
    model, or no key for the router.
    """
    hosts = [(name, tuple(groups), s) for name, groups, s in hosts]  # read twice below
    routers = [(name, s) for name, groups, s in hosts if ROUTER_GROUP in groups]
    if not routers:
        return None
    problems = []
    if len(routers) > 1:
        problems.append(
            f"the `{ROUTER_GROUP}` group lists {len(routers)} hosts ({', '.join(n for n, _ in routers)}): "
            "the fleet has one router; list one host in it"
        )
    boxes = tuple(Box(name, s) for name, _, s in hosts if s.serve_models)
    if not boxes:
        problems.append("the inventory has a router but no box: at least one host needs serve_models = True")
    bases = sorted({b.settings.served_model_name for b in boxes})
    if len(bases) > 1:
        problems.append(
            f"the boxes serve different base models ({', '.join(bases)}): behind one router the base is one model "
            "name; give every box the same served_model_name"
        )
    urls = [b.url for b in boxes]
    for url in sorted({u for u in urls if urls.count(u) > 1}):
        problems.append(f"two boxes are reached at {url}: give each its own endpoint_host")
    router_name, router_host = routers[0]
    router_settings = dataclasses.replace(router_host, secrets=dataclasses.replace(router_host.secrets, api_key=router_key))
    if not router_key:
        problems.append(
            "the fleet's router has no API key, and it never serves without one: set LORAFLEET_API_KEY in .secrets.env, "
            "or set generate_api_key = True so the deploy generates one"
        )
    if problems:
        raise SettingsError(problems)
    return Fleet(boxes, router_name, router_settings)


def endpoint_url(s: Settings, host_name: str) -> str:
    """The endpoint (the OpenAI base URL, ending in /v1) as the laptop reaches it."""
    if s.endpoint_url:
        return s.endpoint_url
    address = s.publish_address if s.network_mode == "publish" else (s.endpoint_host or host_name.removeprefix("@ssh/"))
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    return f"http://{address}:{s.port}/v1"
