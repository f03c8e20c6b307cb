"""The base of the CPU image on a machine without a container registry: one built on the machine itself.

`.ci/setup.sh` (or anyone) builds a Debian base with mmdebstrap and labels it
`org.lorafleet.base.recipe` in the repository `lorafleet/base`. The setting
`cpu_base_image = "local"` (the local target's) means: that image, the newest, when the host's
engine has one (or LORAFLEET_CPU_BASE_IMAGE, when set), else python:3.11-slim. The image step
resolves it on the host (the `LocalBaseImage` fact); tools and tests that run beside the engine
resolve it here with `local_base_image`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import replace

from lorafleet.deploy.settings import Settings

REPOSITORY = "lorafleet/base"
LABEL = "org.lorafleet.base.recipe"
LOCAL = "local"  # the cpu_base_image that asks for the machine's own base
FALLBACK = "python:3.11-slim"
ENV = "LORAFLEET_CPU_BASE_IMAGE"


def list_command() -> str:
    """The engine's base images, newest first (`docker images` lists them so); nothing if it cannot answer."""
    return (f"docker images {shlex.quote(REPOSITORY)} --filter {shlex.quote('label=' + LABEL)} "
            "--format '{{.Repository}}:{{.Tag}}' 2>/dev/null || true")


def newest(listed: list[str]) -> str | None:
    names = [line.strip() for line in listed if line.strip() and not line.strip().endswith(":<none>")]
    return names[0] if names else None


def resolved(s: Settings, found: str | None) -> Settings:
    """The settings with cpu_base_image = "local" made concrete: LORAFLEET_CPU_BASE_IMAGE, the base found, or the fallback."""
    if s.cpu_base_image != LOCAL:
        return s
    return replace(s, cpu_base_image=os.environ.get(ENV) or found or FALLBACK)


def local_base_image() -> str | None:
    """LORAFLEET_CPU_BASE_IMAGE, else the newest base image on this machine's engine, else None."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    if not shutil.which("docker"):
        return None
    try:
        listed = subprocess.run(["bash", "-c", list_command()], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return newest(listed.stdout.splitlines())
