"""The fleet scenario: two gateway-shaped SSH boxes and the router, deployed by one command.

What stands in for what cannot exist here: a docker network is the tailnet (the
router reaches each box by its gateway's name, as by MagicDNS), and a plain
container is the router's Tailscale gateway (its network namespace, with the
router's port published on loopback for the tests). Everything else is real:
SSH, the Docker engine, two vLLM CPU stacks, the router (HAProxy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from lorafleet.tools.bench.load import BenchConfig
from lorafleet.tools.bench.run import run_bench
from lorafleet.tools.endpoint import Endpoint, normalize_url
from tests.support.scenario import (API_KEY, HF_TOKEN, ROOT, WORK, Scenario, cpu_base_image, sh,
                                    timed_phase)

ROUTER_PORT = 4000
# The CPUs each box's vLLM may use: half of this machine's each (on one CPU, both share it).
_CPUS = sorted(os.sched_getaffinity(0))
BOX_CPUS = {"box-a": ",".join(map(str, _CPUS[:max(1, len(_CPUS) // 2)])),
            "box-b": ",".join(map(str, _CPUS[len(_CPUS) // 2:]))}


class FleetScenario:
    """Boxes `box-a` (which also runs the router) and `box-b`; box-b serves a subset of the adapters."""

    def __init__(self, report=print, box_b_adapters: tuple[str, ...] = ("weather", "sql", "alarm")):
        self.report = report
        self.run_id = uuid.uuid4().hex[:8]
        self.dir = WORK / f"run-{self.run_id}-fleet"
        self.network = f"lf-e2e-{self.run_id}-tailnet"
        self.router_gateway = f"lf-e2e-{self.run_id}-router-gateway"
        self.boxes = {name: Scenario("ssh", report=report, network=self.network) for name in ("box-a", "box-b")}
        self.box_b_adapters = box_b_adapters
        self.data: dict[str, dict] = {}
        self.made_network = False
        self.gateway_id = ""
        self.timings: dict[str, float] = {}

    def phase(self, name: str):
        return timed_phase(self, "fleet", name)

    def create(self) -> None:
        with self.phase("create"):
            (self.dir / "state").mkdir(parents=True, exist_ok=True)
            sh("docker", "network", "create", "--label", f"lorafleet.e2e={self.run_id}", self.network)
            self.made_network = True
            # Both boxes keep their models in the root shared with the other scenarios: box-b declares a subset
            # of the demo adapters, and the demo build's marker lists what the build holds, so box-b uses the
            # build the first scenario made (its own build took 190 s from cold).
            for box in self.boxes.values():
                box.create()
            self.gateway_id = sh(
                "docker", "run", "-d", "--name", self.router_gateway, "--label", f"lorafleet.e2e={self.run_id}",
                "--network", self.network, "-p", f"127.0.0.1::{ROUTER_PORT}", "--entrypoint", "sleep",
                cpu_base_image(), "infinity",
            ).stdout.strip()
            port = int(sh("docker", "port", self.gateway_id, f"{ROUTER_PORT}/tcp").stdout.split(":")[-1])
            self.router_url = f"http://127.0.0.1:{port}/v1"
            for name, box in self.boxes.items():
                data = dict(box.data)
                data.update(ssh_hostname="127.0.0.1", endpoint_host=box.target_name)
                if name == "box-b":
                    data["adapters"] = [a for a in data["adapters"] if a["name"] in self.box_b_adapters]
                # As on two machines: each box's vLLM on CPUs of its own (vllm_cpuset). vLLM's worker busy-waits
                # (sched_yield) for a second after each message, and whatever else is bound to its core nearly
                # stops: with only the engines pinned (VLLM_CPU_OMP_THREADS_BIND 0 and 1), a box restarting under
                # load took 50 to 94 s here and over 600 s on CI's machine; with a CPU set each, 21 to 24 s, as
                # idle. Normal priority too: the CPU profile's nice 10 would starve a restarting box behind the
                # router and the load.
                data["vllm_cpuset"] = BOX_CPUS[name]
                data["vllm_env"] = {"LORAFLEET_NICE": "0"}
                data.update(router_network_mode="gateway", router_gateway_container=self.router_gateway,
                            router_port=ROUTER_PORT, router_endpoint_url=self.router_url)
                self.data[name] = data
            self.write_inventory()

    @property
    def inventory(self):
        return self.dir / "inventory.py"

    def write_inventory(self, **overrides) -> None:
        """(Re)write the fleet's inventory; overrides apply to every box."""
        for data in self.data.values():
            data.update(overrides)
        boxes = [(name, data) for name, data in self.data.items()]
        self.inventory.write_text(f"# Written by the e2e fleet scenario.\nfleet = {boxes!r}\nrouter = ['box-a']\n")

    def env(self) -> dict[str, str]:
        env = {**os.environ, "LORAFLEET_STATE_DIR": str(self.dir / "state"), "LORAFLEET_API_KEY": API_KEY,
               "HF_TOKEN": HF_TOKEN}
        env.pop("LORAFLEET_GPU_HOST", None)
        return env

    def deploy(self, *extra: str) -> dict:
        """Run the real deploy on both boxes and the router; pyinfra's JSON results."""
        result = subprocess.run(
            [sys.executable, "-m", "pyinfra", "-y", "--json", str(self.inventory), "deploy.py", *extra],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=3600,
        )
        log = self.dir / f"deploy-{time.strftime('%H%M%S')}.log"
        log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
        if result.returncode != 0:
            raise AssertionError(f"fleet deploy failed ({result.returncode}), log in {log}:\n{result.stderr[-6000:]}")
        for box in self.boxes.values():
            box.report_vllm_start()
        return json.loads(result.stdout)

    def box_key(self, name: str) -> str:
        return (self.dir / "state" / "box-keys" / name).read_text().strip()

    @property
    def router_project(self) -> str:
        return f"{self.boxes['box-a'].project}-router"

    @property
    def router_container(self) -> str:
        return f"{self.router_project}-haproxy"

    def destroy(self) -> None:
        with self.phase("destroy"):
            ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.router_project}",
                     check=False).stdout.split()
            if ids:
                sh("docker", "rm", "-f", *ids, check=False)
            if self.gateway_id:
                sh("docker", "rm", "-f", self.gateway_id, check=False)
            for box in self.boxes.values():
                box.destroy()
            if self.made_network:
                sh("docker", "network", "rm", self.network, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        left = sh("docker", "ps", "-aq", "--filter", f"label=lorafleet.e2e={self.run_id}", check=False).stdout.split()
        left += sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.router_project}",
                   check=False).stdout.split()
        if sh("docker", "network", "inspect", self.network, check=False).returncode == 0:
            left.append(self.network)
        for box in self.boxes.values():
            left += box.leftovers()
        return left + ([str(self.dir)] if self.dir.exists() else [])


@contextmanager
def converged_fleet(report=print) -> Iterator[FleetScenario]:
    fleet = FleetScenario(report=report)
    try:
        fleet.create()
        with fleet.phase("converge"):
            fleet.first_deploy = fleet.deploy()
        yield fleet
    finally:
        fleet.destroy()


def _run(url: str, key: str, models: list[str], requests: int, concurrency: int, label: str) -> dict:
    endpoint = Endpoint(normalize_url(url), key)
    cfg = BenchConfig(models=models, concurrency=concurrency, requests=requests, max_tokens=16, label=label,
                      progress=False, prefix_tools=2)
    return run_bench(endpoint, cfg)["overall"]


def measure(router_url: str, router_key: str, box_url: str, box_key: str, models: list[str],
            requests_per_run: int = 96, concurrency: int = 8, low_load_requests: int = 40) -> dict:
    """The four runs, alternated so that a busier moment of the machine does not favour one side."""
    low_direct = _run(box_url, box_key, models, low_load_requests, 1, "one box, low load")
    low_router = _run(router_url, router_key, models, low_load_requests, 1, "router, low load")
    direct = _run(box_url, box_key, models, requests_per_run, concurrency, "one box directly")
    router = _run(router_url, router_key, models, requests_per_run, concurrency, "router, two boxes")
    rows = [("one box directly, 1 at a time", low_direct), ("router, 1 at a time", low_router),
            (f"one box directly, {concurrency} at a time", direct), (f"router + 2 boxes, {concurrency} at a time", router)]
    lines = [f"{'run':<36} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"]
    for name, r in rows:
        lines.append(f"{name:<36} {r['req_per_s'] or 0:>7.2f} {r['e2e_ms']['p50'] or 0:>8.0f} "
                     f"{r['e2e_ms']['p99'] or 0:>8.0f} {r['error_count']:>6}")
    added = (low_router["e2e_ms"]["p50"] or 0) - (low_direct["e2e_ms"]["p50"] or 0)
    lines.append(f"the router's added latency at low load (p50): {added:.0f} ms")
    ratio = (router["req_per_s"] or 0) / (direct["req_per_s"] or 1)
    lines.append(f"throughput, router + 2 boxes / one box: {ratio:.2f}x (both boxes share this machine's cores)")
    return {"low_direct": low_direct, "low_router": low_router, "direct": direct, "router": router,
            "added_ms": added, "ratio": ratio, "table": "\n".join(lines)}
