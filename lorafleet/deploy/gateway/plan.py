"""The gateway's plan: the values its compose file interpolates. Pure."""

from __future__ import annotations

from lorafleet.deploy import envfile
from lorafleet.deploy.settings import Settings


def render_gateway_env(s: Settings, ts_hostname: str, advertise_tags: str = "") -> str:
    """Non-secret values the gateway compose file interpolates (its .env); the bootstrap writes the same."""
    values = {
        "GATEWAY_CONTAINER": s.gateway_container,
        "TS_HOSTNAME": ts_hostname,
        "STACK_DIR": s.stack_dir,
        "MODELS_ROOT": s.models_root,
        "ADAPTERS_ROOT": s.adapters_root,
        "CACHE_ROOT": s.cache_root,
    }
    if advertise_tags:
        # OAuth-client keys only work with tags; dropping them here would break the next `compose up`.
        values["TS_EXTRA_ARGS"] = f"--advertise-tags={advertise_tags}"
    # Quoted as the serving env file is (a root may hold a space or an apostrophe); plain values stay bare.
    return "".join(envfile.line(k, v) + "\n" for k, v in values.items())
