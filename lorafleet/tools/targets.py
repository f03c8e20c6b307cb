"""Read a deployed target's settings from the inventory, as the deploy saw them.

Used by the testinfra suite and the operator tools, so that they check what
was declared (base model, adapters, endpoint) without a second configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lorafleet.deploy import layout
from lorafleet.deploy.credentials import resolve_secrets
from lorafleet.deploy.fleet import Fleet, endpoint_url
from lorafleet.deploy.settings import Settings, build_settings
from lorafleet.tools.endpoint import resolve_endpoint


@dataclass(frozen=True)
class Target:
    """One inventory host: its pyinfra name, its data, and its validated settings."""

    name: str
    data: dict
    settings: Settings

    @property
    def endpoint(self) -> str:
        """The OpenAI base URL (ending in /v1) from the laptop."""
        return endpoint_url(self.settings, self.name)

    @property
    def testinfra_host(self) -> str:
        """A testinfra host spec reaching the target's shell."""
        if self.name == "@local" or self.name.startswith("@local"):
            return "local://"
        name = self.name.removeprefix("@ssh/")
        user = self.data.get("ssh_user", "root")
        port = self.data.get("ssh_port", 22)
        spec = f"paramiko://{user}@{name}:{port}"
        if self.data.get("ssh_key"):
            spec += f"?ssh_identity_file={self.data['ssh_key']}"
        return spec


def _inventory(inventory: str | os.PathLike):
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    with ctx_state.use(State()):  # pyinfra executes inventory files inside a state context
        return make_inventory(str(inventory), cwd=str(layout.PROJECT_ROOT))


def load_fleet(inventory: str | os.PathLike = layout.PROJECT_ROOT / "inventory.py") -> Fleet | None:
    """The inventory's fleet as the deploy sees it (each box with its own key), or None without a router.

    Never generates a key: a box the deploy has not reached yet has an empty one.
    """
    from lorafleet.deploy.context import inventory_fleet

    return inventory_fleet(_inventory(inventory), create=False)


def load_targets(inventory: str | os.PathLike = layout.PROJECT_ROOT / "inventory.py") -> list[Target]:
    """Every host of an inventory file with its group data layered as pyinfra does."""
    inv = _inventory(inventory)
    secrets = resolve_secrets(layout.PROJECT_ROOT, create=False)
    targets = []
    for host in inv:
        data = host.data.dict()
        targets.append(Target(host.name, data, build_settings(data, secrets, check_sources=False)))
    return targets


def api_key() -> str:
    """The API key every tool uses, found as `lorafleet.tools.endpoint` finds it."""
    return resolve_endpoint(cwd=layout.PROJECT_ROOT).api_key or ""
