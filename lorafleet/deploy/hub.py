"""The hub: downloads on the host (hub_fetch.sh in a throwaway container of the serving image) and their token.

Shared by the base model's and the adapters' steps, and by the secrets step that writes the token. Pure.
"""

from __future__ import annotations

import json
import shlex

from lorafleet.adapters.declared import served_base
from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import host_script, paths, serving_image


def hub_download_command(
    s: Settings, repo: str, revision: str, dest: str, check_adapter: str = "", engine: EngineView = SAME_PATHS
) -> str:
    """Download a hub repo at a revision on the host (hub_fetch.sh), checked when it is an adapter."""
    p = paths(s)
    parent = dest.rsplit("/", 1)[0]
    args = ["bash", host_script(s, "hub_fetch.sh"), "--image", serving_image(s), "--hub-env", p.hub_env_file,
            "--bind", engine.bind(parent), "--bind", engine.bind(s.cache_root),
            "--bind", engine.bind(p.serve_dir, layout.CONTAINER_SERVE_DIR, "ro"),
            "--cache-root", s.cache_root, "--serve-mount", layout.CONTAINER_SERVE_DIR,
            "--repo", repo, "--revision", revision, "--dest", dest, "--marker", layout.SOURCE_MARKER]
    if check_adapter:
        base = served_base(s.base_model_source, s.base_model)
        args += ["--check", check_adapter, "--max-lora-rank", str(s.max_lora_rank),
                 "--base-config", json.dumps(base.config, sort_keys=True, separators=(",", ":"))]
        if s.check_adapter_base:
            for name in base.names:
                args += ["--base-model", name]
    return shlex.join(args)



def render_hub_env_file(s: Settings) -> str:
    """The secrets env file of the download containers (0600 on the host)."""
    lines = ["# Written by lorafleet. Secrets live only in this folder on the host."]
    if s.secrets.hf_token:
        lines.append(f"HF_TOKEN={s.secrets.hf_token}")
    return "\n".join(lines) + "\n"
