"""Preflight: refuse to plan anything on a host that cannot serve.

Read-only facts, but for one round trip in gateway mode: a marker file written
through each mount of the gateway that holds a storage root, read back by a
throwaway container binding the engine's source of it, then removed.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError

from lorafleet.deploy import gpu, layout, stack
from lorafleet.deploy.engine import SAME_PATHS, EngineView, from_inspect
from lorafleet.deploy.facts import (
    ContainerRunning,
    DockerVersions,
    EngineCpus,
    EngineRoundTrip,
    GatewayContainer,
    GpuInContainer,
    ImageId,
    RealPaths,
    StorageRoots,
)
from lorafleet.deploy.fleet import slug
from lorafleet.deploy.rules import cpuset_cpus
from lorafleet.deploy.settings import Settings
from lorafleet.deploy.settings_table import protected_folder

BOOTSTRAP = layout.BOOTSTRAP.relative_to(layout.PROJECT_ROOT)  # as the user runs it, from the repository
ENGINE_DOWN = ("the Docker engine is not reachable (`docker version` shows no Server): start Docker Desktop "
               "(WSL integration on) or dockerd, and mount /var/run/docker.sock into the gateway")


def engine_answers() -> None:
    """Stop unless the Docker engine answers: remove.py reads from it what runs, and an engine that does
    not answer would look like one with nothing to remove."""
    if not host.get_fact(DockerVersions)["server"]:
        raise DeployError(f"{host.name}: {ENGINE_DOWN}; nothing was removed")


def cpuset_problems(cpuset: str, engine_cpus: int | None) -> list[str]:
    """A CPU the engine does not have would fail `compose up` after the deploy changed the box: refuse it first."""
    if engine_cpus is None:
        return []
    missing = sorted({cpu for cpu in cpuset_cpus(cpuset) if cpu >= engine_cpus})
    if not missing:
        return []
    return [f"vllm_cpuset={cpuset!r} names CPU {', '.join(map(str, missing))}, but the Docker engine has {engine_cpus} "
            f"CPUs (0-{engine_cpus - 1}; `docker info` shows NCPU): name CPUs below {engine_cpus}, or leave it empty"]


def check(s: Settings, routes: bool = False) -> tuple[EngineView, Settings]:
    """Stop the deploy, naming every problem and its fix, or return how the engine sees the host's folders and
    the settings with the dtype vLLM is given (`served_dtype`, printed with the reason).

    `routes`: this host runs the fleet's router, whose gateway (in gateway mode) must be running.
    """
    problems = []
    versions = host.get_fact(DockerVersions)
    if not versions["server"]:
        problems.append(ENGINE_DOWN)
    if not versions["compose"]:
        problems.append("docker compose v2 is missing (`docker compose version` failed): install the compose plugin")
    roots = {"models_root": s.models_root, "adapters_root": s.adapters_root, "cache_root": s.cache_root,
             "stack_dir": s.stack_dir}
    if not s.serve_models:  # a router-only host keeps nothing but its stack folder
        roots = {"stack_dir": s.stack_dir}
    states = host.get_fact(StorageRoots, paths=tuple(roots.values()))
    for (key, path), state in zip(roots.items(), [*states, *["missing"] * len(roots)]):
        if state == "missing" and not s.create_storage_roots:
            problems.append(f"{key}={path} does not exist on the host: create it (`bash {BOOTSTRAP} --create-roots` "
                            f"does) or change {key}")
        elif state == "readonly":
            problems.append(f"{key}={path} is not writable on the host: fix its permissions or change {key}")
    for (key, path), real in zip(roots.items(), host.get_fact(RealPaths, paths=tuple(roots.values()))):
        if real != path and (reason := protected_folder(real)):
            problems.append(f"{key}={path} resolves on the host to {real} (through a link), which {reason}: "
                            f"choose a folder of your own for {key}")
    if s.vllm_cpuset and s.serve_models and versions["server"]:
        problems += cpuset_problems(s.vllm_cpuset, host.get_fact(EngineCpus))
    gpus = _read_gpus(s, problems) if s.profile == "cuda" and s.serve_models else None  # a router runs no vLLM
    choice = gpu.choose_dtype(s.dtype, s.profile, gpus) if s.serve_models else gpu.DtypeChoice("", "serves no model")
    if gpus is not None:
        problems += gpu.problems(s, choice, gpus)
    if routes and s.router_network_mode == "gateway" and versions["server"] and not host.get_fact(
            ContainerRunning, container=s.router_gateway_container):
        problems.append(
            f"router_gateway_container={s.router_gateway_container!r} is not running: the router joins its network "
            "(its own Tailscale node). Make it once on this host (docs/fleet.md, \"The router's gateway\"), or set "
            "router_network_mode = \"publish\""
        )
    engine = SAME_PATHS
    if s.network_mode == "gateway" and versions["server"]:
        engine = _engine_view(s, roots, problems)
    if problems:
        raise DeployError(f"{host.name}: preflight failed (nothing was changed):\n" + "\n".join(f"  - {p}" for p in problems))
    if choice.dtype:  # the cpu profile's "auto" leaves it to vLLM, as before: no flag, no line
        logger.info(f"{host.name}: dtype {choice.dtype}: {choice.why}")
    return engine, replace(s, served_dtype=choice.dtype)


def _read_gpus(s: Settings, problems: list[str]) -> list[gpu.Gpu] | None:
    """The GPUs nvidia-smi sees in a container of the serving image, or None (a problem added, or the image not
    pulled yet: the image step reads them right after the pull)."""
    if not host.get_fact(ImageId, image=stack.serving_image(s)):
        return None
    answer = host.get_fact(GpuInContainer, image=stack.serving_image(s))
    if not answer["ok"]:
        problems.append("the engine cannot give a container the GPU (`nvidia-smi` failed in a container): install "
                        "NVIDIA's Windows driver with WSL2 support and enable Docker Desktop's GPU support. Output: "
                        f"{answer['detail'][:300]}")
        return None
    try:
        return gpu.parse_query(answer["detail"].splitlines())
    except gpu.QueryError as exc:
        problems.append(f"{exc}: update NVIDIA's driver on the host (it reports compute_cap since 2022); if the line "
                        "stays, please report it")
        return None


FIX = (f"rerun `bash {BOOTSTRAP}` in the WSL distro with the same roots as group_data (it mounts each root into the "
       "gateway); on Docker Desktop keep the roots on the WSL disk or a drive shared under Settings > Resources > "
       "File sharing")


def _engine_view(s: Settings, roots: dict[str, str], problems: list[str]) -> EngineView:
    """The gateway's mounts as the engine resolved them, each proven by a round trip."""
    gateway = host.get_fact(GatewayContainer, container=s.gateway_container)
    if gateway is None:
        problems.append(
            f"gateway_container={s.gateway_container!r} is not a container the engine knows (`docker inspect` "
            f"found none): the deploy must run in the gateway `bash {BOOTSTRAP}` made; name it in gateway_container"
        )
        return SAME_PATHS
    engine = from_inspect(gateway["mounts"])
    held: dict[str, tuple[str, str]] = {}  # the gateway's mount that holds each root
    for key, path in roots.items():
        mount = engine.mount_of(path)
        if mount is None:
            problems.append(
                f"{key}={path} is not mounted into the gateway from the host, so the engine would bind a folder "
                f"other than the one the deploy writes (`docker inspect {s.gateway_container}` lists no mount "
                f"holding it): {FIX}"
            )
            continue
        held[key] = mount
    checks = sorted(set(held.values()))
    # Per host too: the boxes of a fleet prove their roots at the same time, possibly on a shared folder.
    token = f"{ROUND_TRIP_TOKEN}-{slug(host.name)}"
    results = host.get_fact(EngineRoundTrip, checks=tuple(checks), image=gateway["image"], token=token)
    outcome = dict(zip(checks, [*results, *["error:no answer"] * len(checks)]))
    for key, (folder, source) in held.items():
        found = outcome[(folder, source)]
        if found == "ok":
            continue
        what = {"missing": "not there (the engine binds another folder)",
                "unwritable": "never written (the gateway cannot write there)"}.get(found, found)
        problems.append(
            f"{key}={roots[key]}: a marker written at {folder} (the gateway's view) was {what} when a container "
            f"bound {source} (the engine's view, from `docker inspect {s.gateway_container}`): {FIX}"
        )
    return engine


# One per deploy: a marker left by an interrupted round trip is never mistaken for this one's.
ROUND_TRIP_TOKEN = secrets.token_hex(8)
