"""Benchmark: the fleet's router with two boxes versus one box called directly, from one run.

    python -m benchmarks.fleet [--requests 96] [--concurrency 8] [--low-load 40]

It deploys the e2e fleet (two vLLM CPU stacks behind LiteLLM's proxy, see
tests/support/fleet.py), then measures, through `lorafleet bench`'s load engine:
  - low load (one request at a time): p50 through the router versus directly to
    one box: the router's added latency;
  - under load: requests/s, p50 and p99 through the router (two boxes) versus
    one box directly.
On one 2-core machine both boxes share the same cores: the figures show the
router's overhead and that it spreads load correctly, not how a fleet scales.
It removes everything it made.
"""

from __future__ import annotations

import argparse

from lorafleet.tools.bench.load import BenchConfig
from lorafleet.tools.bench.run import run_bench
from lorafleet.tools.endpoint import Endpoint, normalize_url


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--low-load", type=int, default=40)
    args = parser.parse_args()
    from tests.support.fleet import converged_fleet
    from tests.support.scenario import API_KEY, docker_engine_problem

    if problem := docker_engine_problem():
        print(problem)
        return 2
    with converged_fleet() as fleet:
        # The models both boxes serve: box-b's (a subset of box-a's).
        shared = [fleet.data["box-b"]["served_model_name"], *(a["name"] for a in fleet.data["box-b"]["adapters"])]
        figures = measure(fleet.router_url, API_KEY, fleet.boxes["box-a"].endpoint, fleet.box_key("box-a"), shared,
                          args.requests, args.concurrency, args.low_load)
        print(figures["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
