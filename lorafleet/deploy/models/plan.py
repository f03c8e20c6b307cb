"""The base model's plan: the hub download and demo build commands, the download containers' secrets. Pure."""

from __future__ import annotations

import shlex

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import demo_inputs_hash, paths, serving_image


def demo_build_command(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """Build the demo model and its adapters on the host, in a throwaway container of the serving image."""
    p = paths(s)
    names = ",".join(a.name for a in s.adapters if a.kind == "demo")
    build = shlex.join([
        "docker", "run", "--rm", "--network", "none", "-v", engine.bind(s.models_root), "-v", engine.bind(p.demo_builder_dir, "/demo", "ro"),
        "--entrypoint", "python3", serving_image(s), "/demo/build_demo_model.py", "--out", s.demo_dir,
        "--adapters", names, "--base-name", s.adapter_base_name,
    ])
    return f"{build} && echo {shlex.quote(demo_inputs_hash(s))} > {shlex.quote(s.demo_dir + '/' + layout.INPUTS_MARKER)}"
