"""What the Docker-backed tests (e2e, bootstrap) need from this machine, found in one place."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CI_ENV = Path("/var/tmp/lorafleet/ci.env")
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
HOW_TO_ENABLE = "run `.ci/setup.sh` (installs and starts a Docker engine with compose v2), then rerun"


def sh(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the tail of its output."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def docker_engine_problem() -> str | None:
    """Why tests that need a Docker engine cannot run here, or None."""
    if shutil.which("docker") is None:
        return f"no docker CLI: {HOW_TO_ENABLE}"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return f"no Docker engine reachable (`docker info` failed): {HOW_TO_ENABLE}"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return f"docker compose v2 is missing: {HOW_TO_ENABLE}"
    return None


def local_base_image() -> str | None:
    """The local base image (no registry here), from the env or .ci/setup.sh's env file."""
    if os.environ.get("LORAFLEET_CPU_BASE_IMAGE"):
        return os.environ["LORAFLEET_CPU_BASE_IMAGE"]
    if CI_ENV.is_file():
        for line in CI_ENV.read_text().splitlines():
            if line.startswith("LORAFLEET_CPU_BASE_IMAGE="):
                return line.split("=", 1)[1].strip()
    return None
