"""The gateway project's files, staged on the host for the bootstrap; never started or recreated here.

The deploy reaches the host through the gateway, so recreating it would cut
the deploy's own connection (and vLLM's network). The bootstrap applies them.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.operations import files

from lorafleet import plan
from lorafleet.settings import Settings


def stage(s: Settings) -> None:
    if s.network_mode != "gateway":
        return
    folder = plan.gateway_dir(s)
    for name, source in sorted(plan.GATEWAY_FILES.items()):
        files.put(name=f"Stage the gateway's {name}", src=str(source), dest=f"{folder}/{name}")
    env = plan.render_gateway_env(
        s, host.data.get("endpoint_host") or "gpu-box", host.data.get("tailscale_advertise_tags") or ""
    )
    files.put(name="Stage the gateway's .env", src=StringIO(env), dest=f"{folder}/.env")
