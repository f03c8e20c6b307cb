"""The base model's plan: the hub download and demo build commands, the download containers' secrets. Pure."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import demo_adapter_names, demo_inputs_hash, paths, serving_image


def demo_build_command(s: Settings, engine: EngineView = SAME_PATHS, keep: Sequence[str] = ()) -> str:
    """Build the demo model and its adapters on the host, in a throwaway container of the serving image.

    `keep`: adapters the build in place holds beyond those declared, built again with them so that none is lost.
    """
    p = paths(s)
    declared = demo_adapter_names(s)
    names = [*declared, *(n for n in keep if n not in declared)]
    build = shlex.join([
        "docker", "run", "--rm", "--network", "none", "-v", engine.bind(s.models_root), "-v", engine.bind(p.demo_builder_dir, "/demo", "ro"),
        "--entrypoint", "python3", serving_image(s), "/demo/build_demo_model.py", "--out", s.demo_dir,
        "--adapters", ",".join(names), "--base-name", s.adapter_base_name,
    ])
    return f"{build} && {demo_marker_command(s)}"


def demo_marker_command(s: Settings) -> str:
    """Mark a finished demo build: the inputs' hash, then the adapters the build holds, one per line.

    The adapters are listed from the build, not from the settings: a box that declares fewer of them (the
    fleet's boxes on one machine share a models root) finds all of its own there and builds nothing.
    """
    q = shlex.quote
    marker = f"{s.demo_dir}/{layout.INPUTS_MARKER}"
    partial = marker + layout.STAGING_SUFFIX
    return (f"{{ echo {q(demo_inputs_hash(s))} && ls -1 {q(s.demo_dir + '/adapters')}; }} > {q(partial)}"
            f" && mv -f {q(partial)} {q(marker)}")
