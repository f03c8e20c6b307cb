"""Preflight: refuse to plan anything on a host that cannot serve (read-only facts)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from lorafleet.deploy import render
from lorafleet.deploy.facts import DockerVersions, GpuInContainer, ImageId, StorageRoots
from lorafleet.deploy.settings import Settings


def check(s: Settings) -> None:
    problems = []
    versions = host.get_fact(DockerVersions)
    if not versions["server"]:
        problems.append(
            "the Docker engine is not reachable (`docker version` shows no Server): start Docker Desktop "
            "(WSL integration on) or dockerd, and mount /var/run/docker.sock into the gateway"
        )
    if not versions["compose"]:
        problems.append("docker compose v2 is missing (`docker compose version` failed): install the compose plugin")
    roots = {"models_root": s.models_root, "adapters_root": s.adapters_root, "cache_root": s.cache_root,
             "stack_dir": s.stack_dir}
    states = host.get_fact(StorageRoots, paths=tuple(roots.values()), in_gateway=s.network_mode == "gateway")
    for (key, path), state in zip(roots.items(), [*states, *["missing"] * len(roots)]):
        if state == "missing" and not s.create_storage_roots:
            problems.append(f"{key}={path} does not exist on the host: create it (the bootstrap does) or change {key}")
        elif state == "readonly":
            problems.append(f"{key}={path} is not writable on the host: fix its permissions or change {key}")
        elif state == "unshared":
            problems.append(
                f"{key}={path} is not mounted into the gateway from the host, so the Docker daemon would not see "
                "what the deploy writes there: mount it at the same path in the gateway (path parity)"
            )
    if s.profile == "cuda" and host.get_fact(ImageId, image=render.serving_image(s)):
        gpu = host.get_fact(GpuInContainer, image=render.serving_image(s))
        if not gpu["ok"]:
            problems.append(
                "the engine cannot give a container the GPU (`nvidia-smi` failed in a container): install NVIDIA's "
                f"Windows driver with WSL2 support and enable Docker Desktop's GPU support. Output: {gpu['detail'][:300]}"
            )
    if problems:
        raise DeployError(f"{host.name}: preflight failed (nothing was changed):\n" + "\n".join(f"  - {p}" for p in problems))
