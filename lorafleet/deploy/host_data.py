"""Per-host settings on the laptop: `host_data/<name>.py`, as pyinfra's group_data is per group.

A fleet's box that serves its own subset of the adapters, or listens on another
port, says so in its file; everything else comes from group_data.
"""

from __future__ import annotations

import runpy

from lorafleet.deploy.layout import PROJECT_ROOT

HOST_DATA_DIR = PROJECT_ROOT / "host_data"


def host_data(host: str) -> dict:
    """The settings in host_data/<host>.py (its lower-case top-level names), or {} without one."""
    path = HOST_DATA_DIR / f"{host}.py"
    if not path.is_file():
        return {}
    values = runpy.run_path(str(path))
    return {k: v for k, v in values.items() if k.islower() and not k.startswith("_") and not callable(v)
            and type(v).__name__ != "module"}
