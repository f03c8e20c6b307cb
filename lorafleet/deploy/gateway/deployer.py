"""The gateway project's files, staged on the host for the bootstrap; never started or recreated here.

The deploy reaches the host through the gateway, so recreating it would cut
the deploy's own connection (and vLLM's network). The bootstrap applies them.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.operations import files

from lorafleet.deploy import layout, stack
from lorafleet.deploy.gateway import plan as gateway_plan
from lorafleet.deploy.ops import shipped
from lorafleet.deploy.settings import Settings


def stage(s: Settings) -> None:
    if s.network_mode != "gateway":
        return
    folder = stack.paths(s).gateway_dir
    for name, source in sorted(layout.GATEWAY_FILES.items()):
        files.put(name=f"Stage the gateway's {name}", src=shipped(source), dest=f"{folder}/{name}")
    env = gateway_plan.render_gateway_env(s, s.endpoint_host or host.name.removeprefix("@ssh/"), s.tailscale_advertise_tags)
    files.put(name="Stage the gateway's .env", src=StringIO(env), dest=f"{folder}/.env")
