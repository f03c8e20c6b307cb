"""Benchmark: the fleet's router with two boxes versus one box called directly, from one run.

    python -m benchmarks.fleet [--requests 96] [--concurrency 8] [--low-load 40]

It deploys the e2e fleet (two vLLM CPU stacks behind the router, HAProxy, see
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

from tests.support.fleet import measure


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
