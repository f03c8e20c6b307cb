"""Benchmark: the fleet's router alone, against two backends that answer at once.

    python -m benchmarks.router_ceiling [--requests 1500] [--concurrency 64] [--workers 1,2]

What the router itself costs, with no model in the way: two instant OpenAI-compatible backends
(tests/support/fake_server.py, on aiohttp) stand in for two boxes, and the real router image runs
the configuration the deploy generates for a fleet of those two boxes (lorafleet.deploy.fleet).
The backends and the load client (`lorafleet bench`'s engine, streaming chat requests with tools)
share the last core; the router gets the others (`docker run --cpuset-cpus`), with 1, 2, ...
gunicorn workers; then, for comparison, Debian's HAProxy 2.6 on the same cores with the same fleet
(`haproxy_config`: the key checked, `model` read from the body, the same weights; `apt-get install
haproxy`). Each router run is measured beside the same load sent to one backend directly,
in the same run, alternated, so the figures are the router's added latency and its ceiling, not
the machine's. On a 2-core machine the router has one core; more cores show how it scales.

Needs a Docker engine and the router image (the fleet's e2e module or a fleet deploy builds it; by
default the newest `lorafleet/router:*`). Removes what it started.
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
BOX_KEY = "sk-box-ceiling"
ADAPTERS = ("weather", "sql", "email")


def newest_router_image() -> str | None:
    listed = subprocess.run(["docker", "images", "lorafleet/router", "--format", "{{.Repository}}:{{.Tag}}"],
                            capture_output=True, text=True, check=False).stdout.split()
    return next((tag for tag in listed if not tag.endswith(":<none>")), None)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def router_config(ports: list[int]) -> str:
    """The deploy's own router configuration for a fleet of two boxes at these loopback ports."""
    from lorafleet.deploy.fleet import fleet_of, render_router_config
    from lorafleet.deploy.settings import Secrets, build_settings
    from tests.conftest import group_data

    data = group_data("local")
    hosts = []
    for number, port in enumerate(ports):
        s = build_settings({**data, "adapters": [{"name": n, "demo": True} for n in ADAPTERS],
                            "endpoint_host": "127.0.0.1", "port": port, "served_model_name": "fake-functiongemma"},
                           Secrets(api_key=BOX_KEY), check_sources=False)
        hosts.append((f"box-{number}", ["gpu", "router"] if number == 0 else ["gpu"], s))
    return render_router_config(fleet_of(hosts, router_key=KEY))


def haproxy_config(config_yaml: str, port: int, folder: Path) -> str:
    """The same fleet as an HAProxy 2.6 configuration: the router's key checked, the request's `model` read
    from the JSON body (`json_query`) and mapped to a backend of the boxes serving it, with the same weights.

    One key for every box here (the benchmark's boxes share BOX_KEY): a backend sets it once. Per-box keys
    would need a backend per box, chosen by weight in the frontend; not measured here.
    """
    import yaml

    config = yaml.safe_load(config_yaml)
    master = config["general_settings"]["master_key"]
    models: dict[str, list[tuple[str, int, str]]] = {}
    for d in config["model_list"]:
        params = d["litellm_params"]
        address = params["api_base"].removeprefix("http://").removesuffix("/v1")
        models.setdefault(d["model_name"], []).append((address, params["weight"], params["api_key"]))
    keys = {key for servers in models.values() for _, _, key in servers}
    assert len(keys) == 1, "this configuration sets one key for every box"
    box_key = keys.pop()
    (folder / "models.map").write_text("".join(f"{m} m{i}\n" for i, m in enumerate(models)))
    lines = ["global", "    maxconn 4096", "    nbthread 1", "defaults", "    mode http", "    timeout connect 5s",
             "    timeout client 600s", "    timeout server 600s", "    option http-buffer-request",
             "frontend fleet", f"    bind 127.0.0.1:{port}",
             f'    http-request return status 200 content-type text/plain string ok if {{ path /health }}',
             f'    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {master}" }}',
             "    http-request set-var(txn.model) req.body,json_query('$.model')",
             f"    use_backend %[var(txn.model),map({folder}/models.map,unknown)]", "    default_backend unknown",
             "backend unknown",
             "    http-request return status 404 content-type application/json string '{\"error\": \"unknown model\"}'"]
    for i, (model, servers) in enumerate(models.items()):
        lines += [f"backend m{i}  # {model}", "    balance random", f'    http-request set-header Authorization "Bearer {box_key}"']
        lines += [f"    server s{j} {address} weight {weight}" for j, (address, weight, _) in enumerate(servers)]
    return "\n".join(lines) + "\n"


def wait_for(url: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s")


def run_load(url: str, key: str, requests: int, concurrency: int, label: str) -> dict:
    from lorafleet.tools.bench.load import BenchConfig
    from lorafleet.tools.bench.run import run_bench
    from lorafleet.tools.endpoint import Endpoint, normalize_url

    cfg = BenchConfig(models=["fake-functiongemma", *ADAPTERS], concurrency=concurrency, requests=requests,
                      max_tokens=8, label=label, progress=False, prefix_tools=2)
    return run_bench(Endpoint(normalize_url(url), key), cfg)["overall"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--low-load", type=int, default=200, help="requests one at a time, for the added latency")
    parser.add_argument("--workers", default="1,2", help="router worker counts to try")
    parser.add_argument("--image", help="router image (default: the newest lorafleet/router:*)")
    parser.add_argument("--routers", default="litellm,haproxy",
                        help="which routers to measure: litellm (the deploy's), haproxy (Debian's 2.6, for comparison)")
    args = parser.parse_args()
    routers = args.routers.split(",")
    image = args.image or newest_router_image()
    if not image and "litellm" in routers:
        raise SystemExit("no lorafleet/router image here: run the fleet's e2e module or a fleet deploy first")
    cores = os.cpu_count() or 1
    client_core = cores - 1
    router_cores = f"0-{cores - 2}" if cores > 2 else "0"
    os.sched_setaffinity(0, {client_core})  # this process: the load client, and the backends it starts

    ports = [free_port(), free_port()]
    backends = [subprocess.Popen([sys.executable, "-m", "tests.support.fake_server", "--port", str(port),
                                  "--adapters", ",".join(ADAPTERS), "--tokens", "8", "--max-seconds", "3600"],
                                 cwd=ROOT, env={**os.environ, "FAKE_SERVER_API_KEY": BOX_KEY},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    folder = Path(tempfile.mkdtemp(prefix="lorafleet-router-ceiling-"))
    os.chmod(folder, 0o755)
    (folder / "config.yaml").write_text(router_config(ports))
    os.chmod(folder / "config.yaml", 0o644)
    container = f"lorafleet-router-ceiling-{os.getpid()}"
    rows = []
    try:
        for port in ports:
            wait_for(f"http://127.0.0.1:{port}/health")
        direct_url = f"http://127.0.0.1:{ports[0]}/v1"
        run_load(direct_url, BOX_KEY, 100, 8, "warm-up")
        def measure(name: str, router_url: str) -> None:
            run_load(router_url, KEY, 100, 8, "warm-up")
            low_direct = run_load(direct_url, BOX_KEY, args.low_load, 1, "direct, 1 at a time")
            low_router = run_load(router_url, KEY, args.low_load, 1, "router, 1 at a time")
            direct = run_load(direct_url, BOX_KEY, args.requests, args.concurrency, "direct, under load")
            router = run_load(router_url, KEY, args.requests, args.concurrency, "router, under load")
            rows.append((name, low_direct, low_router, direct, router))

        if "haproxy" in routers:
            port = free_port()
            (folder / "haproxy.cfg").write_text(haproxy_config(router_config(ports), port, folder))
            haproxy = subprocess.Popen(["taskset", "-c", router_cores, "haproxy", "-f", str(folder / "haproxy.cfg")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(f"http://127.0.0.1:{port}/health", 20)
                measure("haproxy 2.6, 1 thread", f"http://127.0.0.1:{port}/v1")
            finally:
                haproxy.terminate()
                haproxy.wait(timeout=10)
        for workers in (int(w) for w in args.workers.split(",")) if "litellm" in routers else ():
            router_port = free_port()
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
            subprocess.run(["docker", "run", "-d", "--name", container, "--network", "host",
                            "--cpuset-cpus", router_cores, "-v", f"{folder}:/router:ro", image,
                            "--config", "/router/config.yaml", "--host", "127.0.0.1", "--port", str(router_port),
                            "--num_workers", str(workers), "--run_gunicorn"], check=True, capture_output=True)
            wait_for(f"http://127.0.0.1:{router_port}/health/liveliness")
            measure(f"litellm, {workers} worker{'s' if workers > 1 else ''}", f"http://127.0.0.1:{router_port}/v1")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        for backend in backends:
            backend.terminate()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"routers on cpu {router_cores} (litellm: {image}); backends and client on cpu {client_core}; "
          f"streaming chat requests with tools, {args.concurrency} at a time under load")
    print(f"{'router':<22} {'run':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for router_name, *runs in rows:
        for name, r in zip(("direct, 1 at a time", "router, 1 at a time", "direct, under load", "router, under load"),
                           runs):
            print(f"{router_name:<22} {name:<22} {r['req_per_s'] or 0:>8.1f} {r['e2e_ms']['p50'] or 0:>8.1f} "
                  f"{r['e2e_ms']['p99'] or 0:>8.1f} {r['error_count']:>6}")
        low_direct, low_router, direct, router = runs
        print(f"{router_name:<22} added p50 at 1 at a time: {(low_router['e2e_ms']['p50'] or 0) - (low_direct['e2e_ms']['p50'] or 0):.1f} ms; "
              f"added p50 under load: {(router['e2e_ms']['p50'] or 0) - (direct['e2e_ms']['p50'] or 0):.1f} ms; "
              f"router / direct throughput: {(router['req_per_s'] or 0) / (direct['req_per_s'] or 1):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
