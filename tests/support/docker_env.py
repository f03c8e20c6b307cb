"""What the Docker-backed tests (e2e, bootstrap) need from this machine, found in one place."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lorafleet.deploy.local_base import local_base_image  # noqa: F401 (the tests' one place to ask)

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
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
            return f"no Docker engine reachable (`docker info` failed): {HOW_TO_ENABLE}"
        if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode != 0:
            return f"docker compose v2 is missing: {HOW_TO_ENABLE}"
    except subprocess.TimeoutExpired:
        return f"the Docker engine does not answer (`docker info` timed out after 30 s): {HOW_TO_ENABLE}"
    return None


def in_ci() -> bool:
    """CI sets CI=true: there a missing engine is a failure, never a skip."""
    return os.environ.get("CI", "").lower() == "true"


def ensure_serving_image(image: str) -> str:
    """The CPU serving image, built as the deploy builds it (files/image, its build.sh) when this engine lacks it."""
    from lorafleet.deploy import layout

    return ensure_built(image, layout.CPU_BUILD_FILES)


def ensure_built(image: str, build_files: dict[str, Path], base: str | None = None) -> str:
    """`image` as the deploy builds it from `build_files` (its build.sh, on the local base) when this engine lacks it."""
    import tempfile

    from lorafleet.deploy import layout, local_base

    if sh("docker", "image", "inspect", image, check=False).returncode == 0:
        return image
    base = base or local_base_image() or local_base.FALLBACK
    with tempfile.TemporaryDirectory() as context:
        for name, source in build_files.items():
            shutil.copy(source, Path(context) / name)
        sh("bash", str(layout.HOST_SCRIPTS["build.sh"]), image, context, f"BASE_IMAGE={base}", timeout=1800)
    return image


def vllm_start(container: str) -> tuple[str, float] | None:
    """(StartedAt, seconds from the container's start to vLLM's "Application startup complete"), or None.

    What one vLLM start costs, as CI reports it after each deploy that (re)started one.
    """
    started = sh("docker", "inspect", "--format", "{{.State.StartedAt}}", container, check=False).stdout.strip()
    if not started:
        return None
    logs = sh("docker", "logs", "--timestamps", "--since", started, container, check=False)
    for line in (logs.stdout + logs.stderr).splitlines():
        if "Application startup complete" in line:
            return started, (_instant(line.split()[0]) - _instant(started))
    return None


def _instant(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    from datetime import datetime

    day, _, rest = stamp.rstrip("Z").partition("T")
    clock, _, fraction = rest.partition(".")
    whole = datetime.fromisoformat(f"{day}T{clock}+00:00").timestamp()
    return whole + float(f"0.{fraction or 0}")
