"""The base image of the CPU build on this machine: where no registry is reachable, a local one."""

from __future__ import annotations

import os
from pathlib import Path

# Written by .ci/setup.sh after it builds a base image with mmdebstrap.
CI_ENV = Path("/var/tmp/lorafleet/ci.env")


def local_base_image() -> str | None:
    """LORAFLEET_CPU_BASE_IMAGE from the environment, else from .ci/setup.sh's env file, else None."""
    if os.environ.get("LORAFLEET_CPU_BASE_IMAGE"):
        return os.environ["LORAFLEET_CPU_BASE_IMAGE"]
    if CI_ENV.is_file():
        for line in CI_ENV.read_text().splitlines():
            if line.startswith("LORAFLEET_CPU_BASE_IMAGE="):
                return line.split("=", 1)[1].strip()
    return None
