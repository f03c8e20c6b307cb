"""The end-to-end scenario, as Molecule runs one: create, converge, idempotence, verify, destroy.

A scenario owns one run folder and the containers it starts (by id); destroy
removes exactly those. The demo model, the vLLM cache and images are caches
keyed by their inputs and are kept between runs, as they would be on a box.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.docker_env import COMPOSE_PLUGIN, docker_engine_problem, local_base_image, sh, vllm_start  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[2]
TARGET_CONTEXT = ROOT / "tests" / "e2e" / "target"  # the gateway-shaped SSH target image
WORK = Path(os.environ.get("LORAFLEET_E2E_DIR", "/var/tmp/lorafleet-e2e"))
# $HOME and # on purpose: compose interpolates and comments env files, and the key must arrive exactly as given.
API_KEY = "sk-e2e-$HOME#key-" + uuid.uuid4().hex[:12]
# The user's default roots (group_data/all.py): on the Docker Desktop-shaped target the gateway sees the
# storage at these paths, while the engine binds other folders of this machine (as its VM's paths differ).
DESKTOP_ROOTS = {"models_root": "/mnt/d/AI_Models/base", "adapters_root": "/mnt/e/AI_Models/adapters",
                 "cache_root": "/mnt/d/AI_Models/cache", "stack_dir": "/opt/lorafleet"}
# Recognisable fake secrets: the scenario asserts they appear nowhere but the secrets env file.
HF_TOKEN = "hf_" + "lorafleetE2Efake" + uuid.uuid4().hex


@contextmanager
def timed_phase(scenario, kind: str, name: str):
    """Report a phase's start and duration (`[e2e KIND] NAME: S s`), kept in scenario.timings."""
    start = time.monotonic()
    scenario.report(f"[e2e {kind}] {name} ...")
    try:
        yield
    finally:
        scenario.timings[name] = time.monotonic() - start
        scenario.report(f"[e2e {kind}] {name}: {scenario.timings[name]:.1f} s")


def cpu_base_image() -> str:
    """The base of the CPU image: the local one where no registry is reachable."""
    return local_base_image() or "python:3.11-slim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_group_data() -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import group_data

    return group_data("local")


@dataclass
class Scenario:
    """One target (`ssh`: a gateway-shaped SSH server; `local`: @local) and everything made for it."""

    kind: str
    report: callable = print
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    target_id: str | None = None
    data: dict = field(default_factory=dict)
    host_name: str = ""
    network: str | None = None  # a docker network the SSH target joins (the fleet's tailnet stand-in)
    own_cache: bool = False  # a cache root of its own, in its run folder: for a scenario that purges it

    def __post_init__(self):
        # The local target's folders hold a space and an apostrophe, as a Windows user's drive folders do
        # ("D:\\Ana's models"): every root but the shared model and cache roots is below it.
        self.dir = WORK / (f"run-{self.run_id}-{self.kind}" + (" Ana's" if self.kind == "local" else ""))
        self.project = f"lf-e2e-{self.run_id}-{self.kind}"
        # Caches shared with the README's local deploy: the demo model is rebuilt only when its inputs
        # change; vLLM's compiled kernels and hub downloads are kept.
        self.models_root = Path(local_group_data()["models_root"])
        self.cache_root = self.dir / "cache" if self.own_cache else Path(local_group_data()["cache_root"])
        self.timings: dict[str, float] = {}
        self.vllm_started: str | None = None

    # -- phases ---------------------------------------------------------------

    def phase(self, name: str):
        return timed_phase(self, self.kind, name)

    @property
    def host_roots(self) -> dict[str, Path]:
        """Each storage root as this machine (and so the engine) sees it."""
        return {"models_root": self.models_root, "adapters_root": self.dir / "adapters",
                "cache_root": self.cache_root, "stack_dir": self.dir / "stack"}

    def create(self) -> None:
        with self.phase("create"):
            for folder in (*self.host_roots.values(), self.dir / "state"):
                folder.mkdir(parents=True, exist_ok=True)
            # What the deploy sees: the same paths, or on the Docker Desktop-shaped target the user's paths,
            # which exist only inside the gateway (as a WSL distro's paths differ from the engine's VM).
            seen = DESKTOP_ROOTS if self.kind == "desktop" else {k: str(v) for k, v in self.host_roots.items()}
            data = local_group_data()
            data.update(
                cpu_base_image=cpu_base_image(),
                **seen,
                compose_project=self.project,
                health_timeout_seconds=600,
            )
            if self.kind in ("ssh", "desktop"):
                self._start_ssh_target(data, [(str(self.host_roots[k]), seen[k]) for k in seen])
            else:
                port = free_port()
                data.update(port=port, endpoint_url=f"http://127.0.0.1:{port}/v1")
                self.host_name = "@local"
            self.data = data
            self.write_inventory()

    def write_inventory(self, **overrides) -> None:
        """(Re)write the scenario's inventory; overrides change the declared state for later runs."""
        self.data.update(overrides)
        (self.dir / "inventory.py").write_text(
            "# Written by the e2e scenario.\n"
            f"e2e = [({self.host_name!r}, {self.data!r})]\n"
        )

    def deploy(self, *extra: str, check: bool = True, file: str = "deploy.py") -> dict:
        """Run the real deploy (or `file`: remove.py); returns pyinfra's JSON results (plan and per-operation results)."""
        env = {**os.environ, "LORAFLEET_STATE_DIR": str(self.dir / "state"), "LORAFLEET_API_KEY": API_KEY,
               "HF_TOKEN": HF_TOKEN}
        env.pop("LORAFLEET_GPU_HOST", None)
        result = subprocess.run(
            [sys.executable, "-m", "pyinfra", "-y", "--json", str(self.dir / "inventory.py"), file, *extra],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
        )
        # Every run's log starts with "deploy-": files_containing reads past them.
        log = self.dir / f"deploy-{'' if file == 'deploy.py' else Path(file).stem + '-'}{time.strftime('%H%M%S')}.log"
        log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"{file} failed ({result.returncode}), log in {log}:\n{result.stderr[-5000:]}")
        try:
            payload = json.loads(result.stdout)
        except ValueError:
            payload = {}
        payload["returncode"] = result.returncode
        payload["output"] = result.stdout + result.stderr
        self.report_vllm_start()
        return payload

    def report_vllm_start(self) -> None:
        """After a deploy: how long vLLM took to start, if the deploy (re)started it."""
        start = vllm_start(self.vllm_container())
        if start and start[0] != self.vllm_started:
            self.vllm_started = start[0]
            self.report(f"[e2e {self.kind}] vLLM start of {self.vllm_container()}: {start[1]:.0f} s (container start to startup complete)")

    def remove(self, *extra: str, check: bool = True) -> dict:
        """Run the real remove.py (README, "The two commands"); pyinfra's JSON results, as `deploy`."""
        return self.deploy(*extra, check=check, file="remove.py")

    @staticmethod
    def changed_operations(payload: dict) -> list[str]:
        """The operations pyinfra reports as changed, every one counted (the deploy lock reports none of its own)."""
        results = payload.get("results") or {}
        return [op["name"] for op in results.get("operations", []) if op.get("success")]

    def files_containing(self, secret: str) -> list[str]:
        """Files under the scenario's folders whose bytes contain `secret`."""
        found = []
        for path in self.dir.rglob("*"):
            if path.is_file() and not path.name.startswith("deploy-") and secret.encode() in path.read_bytes():
                found.append(str(path.relative_to(self.dir)))
        return found

    def vllm_container(self) -> str:
        return f"{self.project}-vllm"

    def vllm_started_at(self) -> str:
        return sh("docker", "inspect", "--format", "{{.State.StartedAt}}", self.vllm_container()).stdout.strip()

    @property
    def endpoint(self) -> str:
        return self.data["endpoint_url"]

    def verify(self) -> subprocess.CompletedProcess:
        """Run the users' testinfra suite (tests/infra) against this target."""
        env = {**os.environ, "LORAFLEET_STATE_DIR": str(self.dir / "state"), "LORAFLEET_API_KEY": API_KEY}
        args = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/infra",
                "--inventory", str(self.dir / "inventory.py")]
        if self.kind in ("ssh", "desktop"):
            args += [f"--hosts=ssh://{self.project}", f"--ssh-config={self.dir / 'ssh_config'}"]
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)

    def destroy(self) -> None:
        if not self.dir.exists() and not self.target_id:
            return  # destroyed already
        with self.phase("destroy"):
            compose = self.dir / "stack" / "compose.yaml"
            if compose.is_file():
                sh("docker", "compose", "-p", self.project, "-f", str(compose), "down", "--remove-orphans", "--timeout", "5", check=False)
            # Anything else of this project's (e.g. a half-created container), by its compose label.
            ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}", check=False).stdout.split()
            if ids:
                sh("docker", "rm", "-f", *ids, check=False)
            if self.target_id:
                sh("docker", "rm", "-f", "-v", self.target_id, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        self.removed_target, self.target_id = self.target_id, None

    def leftovers(self) -> list[str]:
        """What destroy should have removed but did not."""
        left = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}", check=False).stdout.split()
        target = self.target_id or getattr(self, "removed_target", None)
        if target and sh("docker", "inspect", target, check=False).returncode == 0:
            left.append(target)
        if self.dir.exists():
            left.append(str(self.dir))
        return left

    # -- the gateway-shaped SSH target ------------------------------------------

    def _target_image(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(TARGET_CONTEXT.rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + path.read_bytes())
        digest.update(cpu_base_image().encode())
        digest.update(hashlib.sha256(COMPOSE_PLUGIN.read_bytes()).digest())
        image = f"lorafleet/e2e-target:{digest.hexdigest()[:12]}"
        if sh("docker", "image", "inspect", image, check=False).returncode != 0:
            context = self.dir / "target-context"
            shutil.copytree(TARGET_CONTEXT, context)
            shutil.copy(COMPOSE_PLUGIN, context / "docker-compose")
            sh("docker", "build", "-q", "--build-arg", f"BASE_IMAGE={cpu_base_image()}", "-t", image, str(context),
               env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=1200)
        return image

    def _start_ssh_target(self, data: dict, roots: list[tuple[str, str]]) -> None:
        """The gateway stand-in: sshd, the docker CLI and the engine's socket, each root bound from the host."""
        key = self.dir / "id_ed25519"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        name = self.target_name = f"{self.project}-gateway"
        mounts = []
        for source, seen in roots:
            mounts += ["-v", f"{source}:{seen}"]
        self.target_id = sh(
            "docker", "run", "-d", "--name", name, "--label", f"lorafleet.e2e={self.run_id}",
            *(["--network", self.network] if self.network else []),
            "-p", "127.0.0.1::22", "-p", "127.0.0.1::8000",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro", *mounts,
            self._target_image(),
        ).stdout.strip()
        ssh_port = int(sh("docker", "port", self.target_id, "22/tcp").stdout.split(":")[-1])
        api_port = int(sh("docker", "port", self.target_id, "8000/tcp").stdout.split(":")[-1])
        host_key = ""
        for _ in range(60):
            result = sh("docker", "exec", self.target_id, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False)
            if result.returncode == 0 and sh("ssh-keyscan", "-p", str(ssh_port), "127.0.0.1", check=False).stdout:
                host_key = " ".join(result.stdout.split()[:2])
                break
            time.sleep(1)
        assert host_key, f"the SSH target {name} did not come up: docker logs {self.target_id}"
        known_hosts = self.dir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {host_key}\n")
        (self.dir / "ssh_config").write_text(
            f"Host {self.project}\n  HostName 127.0.0.1\n  Port {ssh_port}\n  User root\n"
            f"  IdentityFile {key}\n  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
        )
        self.host_name = "@ssh/127.0.0.1"
        data.update(
            ssh_port=ssh_port, ssh_user="root", ssh_key=str(key), ssh_known_hosts_file=str(known_hosts),
            network_mode="gateway", gateway_container=name, port=8000,
            endpoint_url=f"http://127.0.0.1:{api_port}/v1",
        )


@contextmanager
def converged(kind: str, *deploy_args: str, report=print, own_cache: bool = False, **overrides) -> Iterator[Scenario]:
    """A created and converged scenario (declared state changed by `overrides`), destroyed on exit.

    `own_cache`: its cache root in its run folder, not the one shared with other runs (see Scenario).
    """
    scenario = Scenario(kind, report=report, own_cache=own_cache)
    try:
        scenario.create()
        if overrides:
            scenario.write_inventory(**overrides)
        with scenario.phase("converge"):
            scenario.first_deploy = scenario.deploy(*deploy_args)
        yield scenario
    finally:
        scenario.destroy()
