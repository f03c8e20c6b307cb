"""Benchmark: the fleet's router alone, against two backends that answer at once.

    python -m benchmarks.router_ceiling [--requests 3000] [--concurrency 64] [--low-load 300]

What the router itself costs, with no model in the way: two instant OpenAI-compatible backends
(tests/support/fake_server.py, on aiohttp), each taking only its own key, stand in for two boxes,
and the router image the deploy builds runs the configuration the deploy writes for a fleet of
those two boxes (lorafleet.deploy.router.config: the user's key checked, `model` read from the
body, a proxy per box setting that box's key, the home box's weight). The router gets every core
but the last (`docker run --cpuset-cpus`; HAProxy starts one thread per core it has), the backends
and the load client (`lorafleet bench`'s engine: streamed chat requests with tools) share the
last. Each router run is measured beside the same load sent to one backend directly, in the same
run, so the figures are the router's added latency and its ceiling, not the machine's. On a
2-core machine the router has one core; more cores show how it scales.

Needs a Docker engine; builds the router image as the deploy does when it is missing. Removes
what it started. LiteLLM's figures in docs/fleet/router-choice.md came from this harness before
the deploy moved to HAProxy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-router-ceiling"
BOX_KEYS = ("sk-box-ceiling-0", "sk-box-ceiling-1")
ADAPTERS = ("weather", "sql", "email")


def router_settings_and_config(ports: list[int], router_port: int):
    """The deploy's router settings and configuration for a fleet of two boxes at these loopback ports."""
    from lorafleet.deploy.fleet import fleet_of
    from lorafleet.deploy.local_base import local_base_image
    from lorafleet.deploy.router import config
    from lorafleet.deploy.settings import Secrets, build_settings
    from tests.conftest import group_data

    data = group_data("local")
    hosts = []
    for number, port in enumerate(ports):
        s = build_settings({**data, "adapters": [{"name": n, "demo": True} for n in ADAPTERS],
                            "endpoint_host": "127.0.0.1", "port": port, "served_model_name": "fake-functiongemma",
                            "router_port": router_port, "router_network_mode": "publish",
                            "cpu_base_image": local_base_image() or "python:3.11-slim"},
                           Secrets(api_key=BOX_KEYS[number]), check_sources=False)
        hosts.append((f"box-{number}", ["gpu", "router"] if number == 0 else ["gpu"], s))
    fleet = fleet_of(hosts, router_key=KEY)
    return fleet.router_settings, config.render(fleet)


def wait_for(url: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s")


def run_load(url: str, key: str, requests: int, concurrency: int, label: str, rate: float | None = None) -> dict:
    from lorafleet.tools.bench.load import BenchConfig
    from lorafleet.tools.bench.run import run_bench
    from lorafleet.tools.endpoint import Endpoint, normalize_url

    cfg = BenchConfig(models=["fake-functiongemma", *ADAPTERS], concurrency=concurrency, requests=requests,
                      max_tokens=8, label=label, progress=False, prefix_tools=2, rate=rate)
    return run_bench(Endpoint(normalize_url(url), key), cfg)["overall"]


def main() -> int:
    from lorafleet.deploy import layout
    from lorafleet.deploy.router import plan
    from tests.support.docker_env import ensure_built
    from tests.support.scenario import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--low-load", type=int, default=300, help="requests one at a time, for the added latency")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="requests/s of the paced run (Poisson arrivals), for the added latency at that rate")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    client_core = cores - 1
    router_cores = f"0-{cores - 2}" if cores > 2 else "0"
    os.sched_setaffinity(0, {client_core})  # this process: the load client, and the backends it starts

    ports, router_port = [free_port(), free_port()], free_port()
    s, config = router_settings_and_config(ports, router_port)
    image = ensure_built(plan.image(s), layout.ROUTER_BUILD_FILES, base=s.cpu_base_image)
    backends = [subprocess.Popen([sys.executable, "-m", "tests.support.fake_server", "--port", str(port),
                                  "--adapters", ",".join(ADAPTERS), "--tokens", "8", "--max-seconds", "3600"],
                                 cwd=ROOT, env={**os.environ, "FAKE_SERVER_API_KEY": key},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port, key in zip(ports, BOX_KEYS)]
    folder = Path(tempfile.mkdtemp(prefix="lorafleet-router-ceiling-"))
    (folder / "haproxy.cfg").write_text(config)
    container = f"lorafleet-router-ceiling-{os.getpid()}"
    rows = []
    try:
        for port in ports:
            wait_for(f"http://127.0.0.1:{port}/health")
        subprocess.run(["docker", "run", "-d", "--name", container, "--network", "host", "--cpuset-cpus", router_cores,
                        "-v", f"{folder}:/router:ro", image], check=True, capture_output=True)
        wait_for(f"http://127.0.0.1:{router_port}/health", 60)
        direct_url, router_url = f"http://127.0.0.1:{ports[0]}/v1", f"http://127.0.0.1:{router_port}/v1"
        run_load(direct_url, BOX_KEYS[0], 100, 8, "warm-up")
        run_load(router_url, KEY, 100, 8, "warm-up")
        low_direct = run_load(direct_url, BOX_KEYS[0], args.low_load, 1, "direct, 1 at a time")
        low_router = run_load(router_url, KEY, args.low_load, 1, "router, 1 at a time")
        paced = int(args.rate * 6)  # six seconds of it
        paced_direct = run_load(direct_url, BOX_KEYS[0], paced, args.concurrency, "direct, paced", rate=args.rate)
        paced_router = run_load(router_url, KEY, paced, args.concurrency, "router, paced", rate=args.rate)
        direct = run_load(direct_url, BOX_KEYS[0], args.requests, args.concurrency, "direct, under load")
        router = run_load(router_url, KEY, args.requests, args.concurrency, "router, under load")
        version = subprocess.run(["docker", "exec", container, "haproxy", "-v"], capture_output=True, text=True).stdout
        rows.append((version.split()[2], low_direct, low_router, paced_direct, paced_router, direct, router))
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        for backend in backends:
            backend.terminate()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"the router ({image}) on cpu {router_cores}; backends and client on cpu {client_core}; "
          f"streamed chat requests with tools, {args.concurrency} at a time under load")
    print(f"{'HAProxy':<22} {'run':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    names = ("direct, 1 at a time", "router, 1 at a time", f"direct, {args.rate:.0f}/s", f"router, {args.rate:.0f}/s",
             f"direct, {args.concurrency} at once", f"router, {args.concurrency} at once")
    for router_name, *runs in rows:
        for name, r in zip(names, runs):
            print(f"{router_name:<22} {name:<22} {r['req_per_s'] or 0:>8.1f} {r['e2e_ms']['p50'] or 0:>8.1f} "
                  f"{r['e2e_ms']['p99'] or 0:>8.1f} {r['error_count']:>6}")

        def added(router: dict, direct: dict) -> str:
            return f"{(router['e2e_ms']['p50'] or 0) - (direct['e2e_ms']['p50'] or 0):.1f} ms"

        low_direct, low_router, paced_direct, paced_router, direct, router = runs
        print(f"{router_name:<22} added p50: {added(low_router, low_direct)} one at a time, "
              f"{added(paced_router, paced_direct)} at {args.rate:.0f} requests/s, {added(router, direct)} at "
              f"{args.concurrency} at once; router / direct throughput: "
              f"{(router['req_per_s'] or 0) / (direct['req_per_s'] or 1):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
