"""Read-only facts about a host, gathered while pyinfra plans (they never change anything)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from datetime import datetime, timezone

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.facts.files import FileContents

from lorafleet.deploy import gpu, layout, local_base


def _timestamp(value: str) -> datetime:
    """Docker's RFC 3339 times (nanoseconds, trailing zeros trimmed) as datetimes."""
    try:
        head, _, fraction = value.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


class DockerVersions(FactBase):
    """Server and compose versions as the target sees them; None where unreachable."""

    def command(self) -> str:
        return (
            "docker version --format 'server={{.Server.Version}}' 2>/dev/null || echo server=; "
            "docker compose version --short 2>/dev/null | sed 's/^/compose=/' || echo compose="
        )

    @staticmethod
    def default():
        return {"server": None, "compose": None}

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        return {"server": values.get("server") or None, "compose": values.get("compose") or None}


class StorageRoots(FactBase):
    """For each path: missing, readonly or ok, as the deploy's shell sees it."""

    def command(self, paths: tuple[str, ...]) -> str:
        checks = []
        for i, p in enumerate(paths):
            q = shlex.quote(p)
            checks.append(f"if [ ! -d {q} ]; then echo {i}=missing; elif [ ! -w {q} ]; then echo {i}=readonly; else echo {i}=ok; fi")
        return "; ".join(checks)

    @staticmethod
    def default():
        return []

    def process(self, output):
        """A list of states in the order of `paths`."""
        states = dict(line.split("=", 1) for line in output if "=" in line)
        return [states.get(str(i), "missing") for i in range(len(states))] if states else []


class RealPaths(FactBase):
    """Each path with every link and `..` resolved on the host (`realpath -m`: it need not exist yet), in order.

    Empty where realpath is missing: the laptop-side checks of the declared paths still hold then.
    """

    def command(self, paths: tuple[str, ...]) -> str:
        return f"realpath -m -- {' '.join(shlex.quote(p) for p in paths)} 2>/dev/null || true"

    @staticmethod
    def default():
        return []

    def process(self, output):
        return [line for line in output if line.startswith("/")]


class ImageId(FactBase):
    """The local id of an image, or None when the engine does not have it."""

    def command(self, image: str) -> str:
        return f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)} 2>/dev/null || true"

    def process(self, output):
        return output[0].strip() if output and output[0].strip() else None


class LocalBaseImage(FactBase):
    """The newest base image built on the host itself (lorafleet/deploy/local_base.py), or None."""

    def command(self) -> str:
        return local_base.list_command()

    def process(self, output):
        return local_base.newest(output)


class EngineCpus(FactBase):
    """How many CPUs the Docker engine has (Docker Desktop: its VM's); None where it does not answer."""

    def command(self) -> str:
        return "docker info --format '{{.NCPU}}' 2>/dev/null || true"

    @staticmethod
    def default():
        return None

    def process(self, output):
        text = output[0].strip() if output else ""
        return int(text) if text.isdigit() else None


class ContainerRunning(FactBase):
    """Whether a container exists and runs."""

    def command(self, container: str) -> str:
        return f"docker inspect --format '{{{{.State.Running}}}}' {shlex.quote(container)} 2>/dev/null || true"

    def process(self, output):
        return bool(output) and output[0].strip() == "true"


class GpuInContainer(FactBase):
    """nvidia-smi's name, memory, compute capability and driver of each GPU (gpu.QUERY), inside a throwaway
    container of the image given every GPU; `detail` is its answer, read by gpu.parse_query."""

    def command(self, image: str) -> str:
        return (
            f"docker run --rm --gpus all --entrypoint nvidia-smi {shlex.quote(image)} {shlex.join(gpu.QUERY)} 2>&1 "
            "&& echo gpu=ok || echo gpu=failed"
        )

    @staticmethod
    def default():
        return {"ok": False, "detail": "no output"}

    def process(self, output):
        return {"ok": bool(output) and output[-1] == "gpu=ok", "detail": "\n".join(output[:-1])}


class ServingState(FactBase):
    """The vLLM container's state: running, health, server hash label, network owner, image id, served adapters."""

    def command(self, container: str, gateway: str = "") -> str:
        c = shlex.quote(container)
        fmt = "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.StartedAt}}|{{.HostConfig.NetworkMode}}|{{index .Config.Labels \"lorafleet.engine\"}}|{{.Image}}"
        parts = [f"echo state=$(docker inspect --format '{fmt}' {c} 2>/dev/null)"]
        if gateway:
            parts.append(
                f"echo gateway=$(docker inspect --format '{{{{.Id}}}}|{{{{.State.StartedAt}}}}' {shlex.quote(gateway)} 2>/dev/null)"
            )
        parts.append(
            f"if [ \"$(docker inspect --format '{{{{.State.Running}}}}' {c} 2>/dev/null)\" = true ]; then "
            f"echo served=$(docker exec {c} python3 {layout.container_script('sync_adapters.py')} --served 2>/dev/null); fi"
        )
        return "; ".join(parts)

    ABSENT = {"exists": False, "running": False, "healthy": False, "served": None, "applied": {}}

    @staticmethod
    def default():
        return dict(ServingState.ABSENT)

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        fields = (values.get("state") or "").split("|")
        if len(fields) < 5 or not fields[0]:
            return dict(self.ABSENT)
        status, health, started, network, server_hash = fields[:5]
        image_id = fields[5] if len(fields) > 5 else ""  # "" (unknown) checks any image a start brings
        try:
            report = json.loads(values["served"]) if values.get("served") else None
        except ValueError:
            report = None
        if report is not None and "served" not in report:
            report = {"served": report, "applied": {}}  # a container started by an older lorafleet
        served = report["served"] if report else None
        applied = report.get("applied", {}) if report else {}
        gateway_id, _, gateway_started = (values.get("gateway") or "").partition("|")
        return {
            "exists": True,
            "running": status == "running",
            "healthy": health == "healthy",
            "started_at": started,
            "server_hash": server_hash,
            "image_id": image_id,
            # vLLM lost its network if the gateway it joined was recreated or restarted since.
            "network_stale": bool(gateway_id) and network.startswith("container:") and (
                network != f"container:{gateway_id}" or _timestamp(gateway_started) > _timestamp(started)
            ),
            "served": served,
            "applied": applied,
        }


class GatewayContainer(FactBase):
    """The gateway's image and its mounts as the engine reports them (`docker inspect`); None if it is not found."""

    def command(self, container: str) -> str:
        return (
            f"docker inspect --format 'image={{{{.Config.Image}}}}{{{{println}}}}mounts={{{{json .Mounts}}}}' "
            f"{shlex.quote(container)} 2>/dev/null || true"
        )

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        try:
            mounts = json.loads(values.get("mounts") or "null")
        except ValueError:
            mounts = None
        if not values.get("image") or not isinstance(mounts, list):
            return None
        return {"image": values["image"], "mounts": mounts}


class EngineRoundTrip(FactBase):
    """For each (folder, engine source): a marker written through the folder, read back by a container binding the source.

    Each line is `i=ok`, `i=missing` (the engine's folder is another one), `i=other:TEXT`,
    `i=unwritable` or `i=error:DOCKER'S MESSAGE`. The marker is removed again.
    """

    def command(self, checks: tuple[tuple[str, str], ...], image: str, token: str) -> str:
        q = shlex.quote
        parts = []
        for i, (folder, source) in enumerate(checks):
            # Named by the token: two deploys at once (the lock comes later) never read each other's marker.
            name = f"{layout.PROBE_MARKER}-{token}"
            marker = q(f"{folder}/{name}")
            # --mount, not -v: a source the engine does not have is an error, never a new empty folder.
            read = (f"docker run --rm --network none --mount {q('type=bind,readonly,src=' + source + ',dst=/probe')} "
                    f"--entrypoint cat {q(image)} {q('/probe/' + name)} 2>&1")
            parts.append(
                f"if {{ printf %s {q(token)} > {marker}; }} 2>/dev/null; then out=$({read}); rc=$?; rm -f {marker}; "
                f"if [ $rc -eq 0 ] && [ \"$out\" = {q(token)} ]; then echo {i}=ok; "
                f"elif [ $rc -eq 0 ]; then echo \"{i}=other:$(printf %s \"$out\" | head -c 80 | tr '\\n' ' ')\"; "
                f"elif printf %s \"$out\" | grep -q 'No such file'; then echo {i}=missing; "
                f"else echo \"{i}=error:$(printf %s \"$out\" | head -n 1 | head -c 300)\"; fi; "
                f"else echo {i}=unwritable; fi"
            )
        return "; ".join(parts)

    @staticmethod
    def default():
        return []

    def process(self, output):
        return [line.split("=", 1)[1] for line in sorted(output, key=lambda x: int(x.split("=")[0])) if "=" in line]


class DeployLockHolder(FactBase):
    """Who holds the deploy lock (its owner line), or None when it is free."""

    def command(self, path: str) -> str:
        q = shlex.quote(path)
        return f"if [ -d {q} ]; then echo held; cat {q}/owner 2>/dev/null || true; fi"

    def process(self, output):
        if not output or output[0] != "held":
            return None
        return output[1] if len(output) > 1 else "unknown (no owner file)"


class ManagedFolders(FactBase):
    """Names of the folders under a path that lorafleet put there (they hold its .lorafleet-source marker)."""

    @staticmethod
    def default():
        return []

    def command(self, path: str) -> str:
        return (
            f"find {shlex.quote(path)} -mindepth 2 -maxdepth 2 -name {layout.SOURCE_MARKER} -printf '%h\\n' 2>/dev/null"
            " | xargs -r -n1 basename || true"
        )

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip())


def marker_is(path: str, expected: str) -> bool:
    """Whether a marker file lorafleet wrote (layout's *_MARKER) says `expected` on its first line."""
    return says_and_lists(host.get_fact(FileContents, path=path), expected, ())


def says_and_lists(lines: list[str] | None, expected: str, names: Iterable[str]) -> bool:
    """Whether a marker's lines (FileContents) say `expected` first and list every one of `names` after it."""
    return bool(lines) and lines[0].strip() == expected and set(names) <= {line.strip() for line in lines[1:]}


class ComposeProject(FactBase):
    """The containers and networks of a compose project, by name, as the engine labels them."""

    @staticmethod
    def default():
        return {"containers": [], "networks": []}

    def command(self, project: str) -> str:
        label = shlex.quote(f"label=com.docker.compose.project={project}")
        return (f"docker ps -a --filter {label} --format 'container={{{{.Names}}}}' 2>/dev/null || true; "
                f"docker network ls --filter {label} --format 'network={{{{.Name}}}}' 2>/dev/null || true")

    def process(self, output):
        found = self.default()
        for line in output:
            kind, _, name = line.strip().partition("=")
            if kind in ("container", "network") and name:
                found[f"{kind}s"].append(name)
        return {kind: sorted(names) for kind, names in found.items()}


class StorageContent(FactBase):
    """What a storage root holds that lorafleet may have made: folders holding its markers (down to two levels
    below the top), the names at the top, and which of `paths` are present."""

    @staticmethod
    def default():
        return {"marked": [], "entries": [], "present": []}

    def command(self, root: str, paths: tuple[str, ...] = ()) -> str:
        q = shlex.quote(root)
        markers = f"\\( -name {layout.SOURCE_MARKER} -o -name {layout.INPUTS_MARKER} \\)"
        # -H: a root may be a link to the drive that holds it.
        parts = [f"find -H {q} -mindepth 2 -maxdepth 3 {markers} -printf 'marked=%h\\n' 2>/dev/null",
                 f"find -H {q} -mindepth 1 -maxdepth 1 -printf 'entry=%f\\n' 2>/dev/null"]
        parts += [f"if [ -e {shlex.quote(p)} ]; then echo {shlex.quote('present=' + p)}; fi" for p in paths]
        return "; ".join(parts) + "; true"

    def process(self, output):
        found = self.default()
        for line in output:
            kind, _, value = line.rstrip("\n").partition("=")
            if kind in ("marked", "present") and value:
                found[kind].append(value)
            elif kind == "entry" and value:
                found["entries"].append(value)
        return {kind: sorted(set(values)) for kind, values in found.items()}
