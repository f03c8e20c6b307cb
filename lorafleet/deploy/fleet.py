"""The fleet: several boxes behind one router, as the inventory declares them.

Pure: from each host's name, groups and settings to the boxes, the router's
place and the router's configuration (LiteLLM's proxy, docs/fleet.md). The
deploy and the operator's tools share it, so both see the same fleet.

An inventory without a `router` group is one box, served as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

import yaml

from lorafleet.deploy.settings import Settings, SettingsError

ROUTER_GROUP = "router"
# The router's Tailscale name when it lives in its own gateway (router/gateway.compose.yaml).
ROUTER_TS_HOSTNAME = "lorafleet-router"
ROUTER_KEY_PREFIX = "sk-"  # LiteLLM's proxy refuses keys of another form


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
    model, or a router key LiteLLM would refuse.
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
    if not router_key.startswith(ROUTER_KEY_PREFIX):
        problems.append(
            f"the API key ({'set' if router_key else 'none'}) does not start with {ROUTER_KEY_PREFIX!r}, which "
            "the fleet's router (LiteLLM) requires: set LORAFLEET_API_KEY=sk-$(openssl rand -hex 24) in .secrets.env, "
            "or remove .state/api-key so the deploy generates one"
        )
    if problems:
        raise SettingsError(problems)
    return Fleet(boxes, router_name, router_settings)


def deployment_id(box: str, model: str) -> str:
    """The router's id of one (box, model): shown in its `x-litellm-model-id` response header."""
    return f"{slug(box)}--{model}"


def router_config(fleet: Fleet, drained: frozenset[str] = frozenset()) -> dict:
    """LiteLLM's proxy configuration: one deployment per (model, box), none for the drained boxes.

    A model's home box gets `router_home_weight` to 1 on every other box, so requests for one
    adapter mostly land where its KV prefix cache and LoRA slot are warm, while different
    adapters spread over the boxes.
    """
    s = fleet.router_settings
    deployments = []
    for model in fleet.models:
        home = fleet.home(model)
        for box in fleet.serving(model):
            if box.name in drained:
                continue
            deployments.append({
                "model_name": model,
                "litellm_params": {
                    "model": f"hosted_vllm/{model}",
                    "api_base": box.url,
                    "api_key": box.settings.secrets.api_key,  # the box's own key
                    "weight": s.router_home_weight if box.name == home else 1,
                },
                "model_info": {"id": deployment_id(box.name, model)},
            })
    return {
        "model_list": deployments,
        "router_settings": {
            "routing_strategy": "simple-shuffle",  # honours `weight`
            "num_retries": 2,  # a retry goes to another box serving the same model
            "allowed_fails": 0,  # one failed request takes the (box, model) out at once...
            "cooldown_time": 10,  # ...for this many seconds; health checks bring it back
            "retry_after": 0,
            "timeout": 600,
        },
        "litellm_settings": {
            # Nothing of a request (prompts, completions, keys) reaches logs or callbacks.
            "turn_off_message_logging": True,
            "redact_user_api_key_info": True,
            "drop_params": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "general_settings": {
            "master_key": s.secrets.api_key,
            # No database: the router's whole state is this file.
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "store_prompts_in_spend_logs": False,
            "background_health_checks": True,
            "health_check_interval": s.router_health_check_seconds,
            "enable_health_check_routing": True,
            "health_check_details": False,
        },
    }


def render_router_config(fleet: Fleet, drained: frozenset[str] = frozenset()) -> str:
    header = ("# Written by lorafleet from the inventory (0600: it holds the fleet's keys). Edit the inventory,\n"
              "# not this file: every deploy rewrites it, and the router reloads it on SIGHUP.\n")
    return header + yaml.safe_dump(router_config(fleet, drained), sort_keys=False)


def endpoint_url(s: Settings, host_name: str) -> str:
    """The endpoint (the OpenAI base URL, ending in /v1) as the laptop reaches it."""
    if s.endpoint_url:
        return s.endpoint_url
    address = s.publish_address if s.network_mode == "publish" else (s.endpoint_host or host_name.removeprefix("@ssh/"))
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    return f"http://{address}:{s.port}/v1"
