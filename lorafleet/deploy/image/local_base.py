"""The base of the CPU image on a machine without a container registry: one built on the machine itself.

`.ci/setup.sh` (or anyone) builds a Debian base with mmdebstrap and labels it
`org.lorafleet.base.recipe` in the repository `lorafleet/base`; the local target
uses the newest such image (images built on it inherit the label, hence the name), so the
README's deploy command works where `python:3.11-slim` cannot be pulled.
"""

from __future__ import annotations

import os
import shutil
import subprocess

REPOSITORY = "lorafleet/base"
LABEL = "org.lorafleet.base.recipe"


def local_base_image() -> str | None:
    """LORAFLEET_CPU_BASE_IMAGE, else the newest local image carrying the base label, else None."""
    if os.environ.get("LORAFLEET_CPU_BASE_IMAGE"):
        return os.environ["LORAFLEET_CPU_BASE_IMAGE"]
    if not shutil.which("docker"):
        return None
    try:
        listed = subprocess.run(
            ["docker", "images", REPOSITORY, "--filter", f"label={LABEL}", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `docker images` lists the newest first.
    names = [line for line in listed.stdout.split() if not line.endswith(":<none>")] if listed.returncode == 0 else []
    return names[0] if names else None
