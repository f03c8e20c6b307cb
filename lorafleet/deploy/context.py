"""Turns pyinfra's host data into validated settings (and the fleet, if any); the deploy's first step."""

from __future__ import annotations

import dataclasses
import sys
from typing import Mapping

from pyinfra import logger
from pyinfra.api.exceptions import DeployError

from lorafleet.deploy.credentials import box_key, resolve_secrets
from lorafleet.deploy.fleet import ROUTER_GROUP, Fleet, fleet_of
from lorafleet.deploy.layout import PROJECT_ROOT
from lorafleet.deploy.settings import Secrets, Settings, SettingsError, build_settings


def host_settings(host, removing: bool = False) -> Settings:
    """Validate every setting of `host` (and the secrets) or stop before anything is planned.

    In a fleet a box's vLLM takes its own key (only the router and lorafleet's tools know it);
    the user's key opens the router. `removing` (remove.py): no secret is read or generated, no
    laptop folder checked: removing what a deploy made needs neither.
    """
    try:
        if removing:
            settings = build_settings(host.data.dict(), Secrets(), check_sources=False, removing=True)
        else:
            settings = _settings(host.name, host.data.dict(), in_fleet=_has_router(host.inventory))
    except SettingsError as exc:
        raise DeployError(f"{host.name}: {exc}") from None
    for warning in settings.warnings:
        logger.warning(f"{host.name}: {warning}")
    return settings


def inventory_fleet(inventory, create: bool = True) -> Fleet | None:
    """The inventory's fleet (each box's settings carry its own key), or None for one box without a router.

    `create=False` (read-only tools): keys that do not exist yet are not generated (they read as "").
    """
    if not _has_router(inventory):
        return None
    try:
        hosts = [(h.name, h.groups, _settings(h.name, h.data.dict(), in_fleet=True, other=True, create=create))
                 for h in inventory]
        router = next(h for h in inventory if ROUTER_GROUP in h.groups).data.dict()
        user_key = resolve_secrets(PROJECT_ROOT, generate_api_key=router.get("generate_api_key") is not False,
                                   create=create).api_key
        fleet = fleet_of(hosts, router_key=user_key)
    except SettingsError as exc:
        raise DeployError(f"the fleet: {exc}") from None
    return fleet


def _has_router(inventory) -> bool:
    return any(ROUTER_GROUP in h.groups for h in inventory)


def routes(host) -> bool:
    """Whether `host` runs the fleet's router (it is in the inventory's `router` group)."""
    return ROUTER_GROUP in host.groups


def _plan_only(name: str) -> bool:
    # A plan (`--dry`, or the @fake connector) shows every step even before the user has every secret.
    return "--dry" in sys.argv or name.startswith("@fake")


def _settings(name: str, data: Mapping, in_fleet: bool, other: bool = False, create: bool = True) -> Settings:
    """One host's settings; `other`: a host read for the router's sake, its adapter folders not checked again."""
    secrets = resolve_secrets(PROJECT_ROOT, generate_api_key=data.get("generate_api_key") is not False, create=create)
    if in_fleet and data.get("serve_models", True) is not False:
        secrets = dataclasses.replace(secrets, api_key=box_key(PROJECT_ROOT, name, create=create))
    # Read-only tools (create=False) need only what is declared: nothing a deploy would fetch, so no HF_TOKEN.
    return build_settings(data, secrets, check_sources=not other, plan_only=_plan_only(name) or not create)
