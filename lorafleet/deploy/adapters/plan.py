"""The adapters' plan: the command that puts a demo adapter in place. Pure."""

from __future__ import annotations

import shlex

from lorafleet.deploy import layout
from lorafleet.deploy.settings import Settings


def demo_adapter_command(s: Settings, name: str, marker: str) -> str:
    """Copy one demo adapter from the demo build into adapters_root, marked with the build's hash."""
    q = shlex.quote
    dest = s.adapter_dir(name)
    staging = dest + layout.STAGING_SUFFIX
    return " && ".join([
        f"rm -rf {q(staging)}",
        f"cp -a {q(s.demo_dir + '/adapters/' + name)} {q(staging)}",
        f"echo {q(marker)} > {q(staging + '/' + layout.SOURCE_MARKER)}",
        f"rm -rf {q(dest)}",
        f"mv {q(staging)} {q(dest)}",
    ])
