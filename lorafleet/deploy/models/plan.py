"""The base model's plan: the hub download and demo build commands, the download containers' secrets. Pure."""

from __future__ import annotations

import shlex

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import demo_inputs_hash, host_script, paths, serving_image


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
        args += ["--check", check_adapter, "--max-lora-rank", str(s.max_lora_rank)]
        if s.check_adapter_base:
            args += ["--base-model", s.adapter_base_name]
    return shlex.join(args)


def render_hub_env_file(s: Settings) -> str:
    """The secrets env file of the download containers (0600 on the host)."""
    lines = ["# Written by lorafleet. Secrets live only in this folder on the host."]
    if s.secrets.hf_token:
        lines.append(f"HF_TOKEN={s.secrets.hf_token}")
    return "\n".join(lines) + "\n"


def demo_build_command(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """Build the demo model and its adapters on the host, in a throwaway container of the serving image."""
    p = paths(s)
    names = ",".join(a.name for a in s.adapters if a.kind == "demo")
    build = shlex.join([
        "docker", "run", "--rm", "--network", "none", "-v", engine.bind(s.models_root), "-v", engine.bind(p.demo_dir, "/demo", "ro"),
        "--entrypoint", "python3", serving_image(s), "/demo/build_demo_model.py", "--out", s.demo_dir,
        "--adapters", names, "--base-name", s.adapter_base_name,
    ])
    return f"{build} && echo {shlex.quote(demo_inputs_hash(s))} > {shlex.quote(s.demo_dir + '/' + layout.INPUTS_MARKER)}"
